package check

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
)

// dnsRecords checks the Services asking for DNS records: their state as the
// controller wrote it, and that each published name resolves to what it
// should through the zone's authoritative servers.
func (r *runner) dnsRecords(ctx context.Context) {
	l, err := r.kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		r.readErr(IDDNSRecords, "Services", err)
		return
	}
	var svcs []corev1.Service
	for _, s := range l.Items {
		if _, ok := s.Annotations[contract.DNSRecords]; ok {
			svcs = append(svcs, s)
		}
	}
	enabled := r.issuer != nil && r.issuer.Records.Enabled
	switch {
	case len(svcs) == 0:
		r.add(IDDNSRecords, output.Skip, "no Service asks for DNS records ("+contract.DNSRecords+")", "")
		return
	case !enabled:
		r.add(IDDNSRecords, output.Warn, fmt.Sprintf("%s ask for DNS records, but records are not enabled in the ACME issuer configuration", plural(len(svcs), "Service")),
			"set acme.config.records (docs/dns-records.md)", serviceRefs(svcs)...)
		return
	}
	servers, serr := r.authoritative(ctx)
	var failing, warning []string
	names := 0
	for _, s := range svcs {
		ref := s.Namespace + "/" + s.Name
		st, err := contract.DecodeDNSRecordState(s.Annotations[contract.DNSRecordsStatus])
		switch {
		case s.Annotations[contract.DNSRecordsStatus] == "":
			warning = append(warning, ref+": not published yet")
			continue
		case err != nil:
			failing = append(failing, ref+": "+err.Error())
			continue
		case st.State == contract.DNSRecordsError:
			failing = append(failing, ref+": "+st.Message)
		case st.State != contract.DNSRecordsPublished:
			warning = append(warning, ref+": "+st.State+": "+st.Message)
		}
		if serr != nil {
			continue
		}
		for _, rec := range st.Records {
			names++
			if msg := r.probe(ctx, servers, rec); msg != "" {
				failing = append(failing, ref+": "+msg)
			}
		}
	}
	if serr != nil {
		warning = append(warning, "names not probed: "+serr.Error())
	}
	switch {
	case len(failing) > 0:
		r.add(IDDNSRecords, output.Fail, fmt.Sprintf("DNS records of %d of %s failing", len(failing), plural(len(svcs), "Service")),
			"see the Service's "+contract.DNSRecordsStatus+" annotation and Events, and the controller's logs", append(failing, warning...)...)
	case len(warning) > 0:
		r.add(IDDNSRecords, output.Warn, fmt.Sprintf("DNS records of %s: %d not published or not probed", plural(len(svcs), "Service"), len(warning)),
			"a conflict names who holds the name; pending waits for a load balancer address or a pod with external hosts", warning...)
	default:
		r.add(IDDNSRecords, output.OK, fmt.Sprintf("%s published, each resolving as published on %s", plural(names, "DNS record"), strings.Join(servers, ", ")), "")
	}
}

func serviceRefs(svcs []corev1.Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Namespace+"/"+s.Name)
	}
	return out
}

// authoritative returns the servers to ask: the RFC 2136 server podtls
// updates, or the zone's NS records.
func (r *runner) authoritative(ctx context.Context) ([]string, error) {
	c := r.issuer
	if c.DNS.Provider == "rfc2136" {
		if s := c.DNS.Config["RFC2136_NAMESERVER"]; s != "" {
			if _, _, err := net.SplitHostPort(s); err != nil {
				s = net.JoinHostPort(s, "53")
			}
			return []string{s}, nil
		}
	}
	ns := r.opts.Nameservers
	if ns == nil {
		ns = func(ctx context.Context, zone string) ([]string, error) {
			l, err := net.DefaultResolver.LookupNS(ctx, zone)
			if err != nil {
				return nil, err
			}
			var out []string
			for _, n := range l {
				out = append(out, net.JoinHostPort(strings.TrimSuffix(n.Host, "."), "53"))
			}
			return out, nil
		}
	}
	out, err := ns(ctx, c.Records.Zone)
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("zone %s has no NS records", c.Records.Zone)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot find the authoritative servers of %s: %w", c.Records.Zone, err)
	}
	return out, nil
}

// probe asks every server for one published RRset ("NAME TTL TYPE
// T1,T2") and returns what differs ("" when all agree).
func (r *runner) probe(ctx context.Context, servers []string, rec string) string {
	f := strings.Fields(rec)
	if len(f) != 4 {
		return fmt.Sprintf("record %q: not NAME TTL TYPE TARGETS", rec)
	}
	name, typ, want := f[0], f[2], strings.Split(f[3], ",")
	slices.Sort(want)
	lookup := r.opts.Lookup
	if lookup == nil {
		lookup = r.lookup
	}
	var problems []string
	for _, srv := range servers {
		got, err := lookup(ctx, srv, name, typ)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s %s at %s: %v", name, typ, srv, err))
			continue
		}
		for i := range got {
			got[i] = strings.TrimSuffix(strings.ToLower(got[i]), ".")
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("%s %s at %s: %s, published %s", name, typ, srv, strings.Join(got, ","), strings.Join(want, ",")))
		}
	}
	return strings.Join(problems, "; ")
}

// lookup asks server directly (no cache, no recursion needed: it is
// authoritative for the name).
func (r *runner) lookup(ctx context.Context, server, name, typ string) ([]string, error) {
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		d := net.Dialer{Timeout: r.opts.DialTimeout}
		return d.DialContext(ctx, network, server)
	}}
	ctx, cancel := context.WithTimeout(ctx, 2*r.opts.DialTimeout)
	defer cancel()
	switch typ {
	case "A", "AAAA":
		network := map[string]string{"A": "ip4", "AAAA": "ip6"}[typ]
		ips, err := res.LookupIP(ctx, network, name+".")
		var out []string
		for _, ip := range ips {
			out = append(out, ip.String())
		}
		return out, err
	case "CNAME":
		c, err := res.LookupCNAME(ctx, name+".")
		return []string{c}, err
	}
	return nil, fmt.Errorf("type %s not probed", typ)
}
