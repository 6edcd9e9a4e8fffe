package acmetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

func (e *Env) path(name string) string { return filepath.Join(e.Dir, name) }

// keyClause is a BIND key statement; nsupdate -k reads the same syntax.
func keyClause(name, algorithm, secret string) string {
	return fmt.Sprintf("key %q {\n  algorithm %s;\n  secret %q;\n};\n", name, algorithm, secret)
}

// writeNamedConfig writes named.conf and the key files. The ACME key may
// only touch TXT records (what DNS-01 needs); a second key, used by
// AddRecord, may write any type.
func (e *Env) writeNamedConfig() error {
	dnsDir := e.path("dns")
	if err := os.MkdirAll(dnsDir, 0o700); err != nil {
		return fmt.Errorf("acmetest: %w", err)
	}
	keys := keyClause(e.TSIGKeyName, e.TSIGAlgorithm, e.TSIGSecret) + keyClause(e.adminName, e.TSIGAlgorithm, e.adminValue) +
		keyClause(e.RecordsKeyName, e.TSIGAlgorithm, e.RecordsKeySecret)
	if err := os.WriteFile(filepath.Join(dnsDir, "keys.conf"), []byte(keys), 0o600); err != nil {
		return fmt.Errorf("acmetest: write keys: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dnsDir, "admin.key"), []byte(keyClause(e.adminName, e.TSIGAlgorithm, e.adminValue)), 0o600); err != nil {
		return fmt.Errorf("acmetest: write admin key: %w", err)
	}
	ip, port, _ := net.SplitHostPort(e.DNSAddr)
	conf := fmt.Sprintf(`options {
  directory %[1]q;
  pid-file none;
  session-keyfile %[2]q;
  listen-on port %[3]s { %[4]s; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  notify no;
  allow-query { any; };
};
controls { };
include %[5]q;
zone %[6]q {
  type primary;
  file "zone.db";
  update-policy { grant %[7]s zonesub TXT; grant %[8]s zonesub ANY; grant %[9]s zonesub A AAAA CNAME TXT; };
  allow-transfer { key %[9]s; key %[8]s; };
};
`, dnsDir, filepath.Join(dnsDir, "session.key"), port, ip, filepath.Join(dnsDir, "keys.conf"),
		e.Zone, e.TSIGKeyName, e.adminName, e.RecordsKeyName)
	if err := os.WriteFile(filepath.Join(dnsDir, "named.conf"), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("acmetest: write named.conf: %w", err)
	}
	return nil
}

// writeZone writes a fresh zone file (and drops the journal of the previous
// run) with the records added so far by AddRecord.
func (e *Env) writeZone() error {
	dnsDir := e.path("dns")
	ip, _, _ := net.SplitHostPort(e.DNSAddr)
	var b bytes.Buffer
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 5\n", e.Zone)
	addrType := "A"
	if strings.Contains(ip, ":") {
		addrType = "AAAA"
	}
	fmt.Fprintf(&b, "@ IN SOA ns1 hostmaster 1 60 60 600 5\n@ IN NS ns1\nns1 IN %s %s\n", addrType, ip)
	for _, r := range e.records {
		b.WriteString(r + "\n")
	}
	_ = os.Remove(filepath.Join(dnsDir, "zone.db.jnl"))
	if err := os.WriteFile(filepath.Join(dnsDir, "zone.db"), b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("acmetest: write zone: %w", err)
	}
	return nil
}

// StartDNS starts BIND (again) on a fresh zone (the records of AddRecord
// only) and waits until it answers for the zone.
func (e *Env) StartDNS(ctx context.Context) error { return e.startDNS(ctx, true) }

// ResumeDNS starts BIND again after StopDNS with the zone as it was, every
// dynamic update kept (its journal), as a restarted server would.
func (e *Env) ResumeDNS(ctx context.Context) error { return e.startDNS(ctx, false) }

func (e *Env) startDNS(ctx context.Context, fresh bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dns != nil && e.dns.exited() == nil {
		return errors.New("acmetest: DNS server already running")
	}
	if fresh {
		if err := e.writeZone(); err != nil {
			return err
		}
	}
	named, err := e.namedBinary()
	if err != nil {
		return err
	}
	p, err := e.startProcess("named", "named.log", nil, named, "-g", "-c", e.path("dns/named.conf"))
	if err != nil {
		return err
	}
	e.dns = p
	if err := e.waitReady(ctx, p, func(ctx context.Context) error {
		_, err := e.resolver().LookupNS(ctx, e.Zone)
		return err
	}); err != nil {
		p.stop()
		e.dns = nil
		return err
	}
	return nil
}

// StopDNS stops BIND; lookups and updates fail until StartDNS.
func (e *Env) StopDNS() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dns != nil {
		e.dns.stop()
		e.dns = nil
	}
}

// resolver asks BIND directly, over Options.DialContext.
func (e *Env) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return e.opts.DialContext(ctx, network, e.DNSAddr)
	}}
}

// Lookup asks BIND for name's records of type rrtype (A, AAAA, TXT, NS or
// CNAME) and returns their values.
func (e *Env) Lookup(ctx context.Context, name, rrtype string) ([]string, error) {
	r := e.resolver()
	name = fqdn(name)
	var out []string
	var err error
	switch strings.ToUpper(rrtype) {
	case "A", "AAAA":
		network := "ip4"
		if strings.EqualFold(rrtype, "AAAA") {
			network = "ip6"
		}
		var ips []net.IP
		ips, err = r.LookupIP(ctx, network, name)
		for _, ip := range ips {
			out = append(out, ip.String())
		}
	case "TXT":
		out, err = r.LookupTXT(ctx, name)
	case "NS":
		var ns []*net.NS
		ns, err = r.LookupNS(ctx, name)
		for _, n := range ns {
			out = append(out, n.Host)
		}
	case "CNAME":
		var c string
		c, err = r.LookupCNAME(ctx, name)
		out = []string{c}
	default:
		return nil, fmt.Errorf("acmetest: lookup type %q not supported", rrtype)
	}
	if err != nil {
		return nil, fmt.Errorf("acmetest: lookup %s %s: %w", name, rrtype, err)
	}
	return out, nil
}

// AddRecord adds name (absolute, inside Zone) rrtype value, e.g.
// ("customer.demo.example.test", "A", "10.250.0.2"), by an RFC 2136 update
// signed with a TSIG key, and keeps it across DNS restarts.
func (e *Env) AddRecord(ctx context.Context, name, rrtype, value string) error {
	name = fqdn(name)
	if !strings.HasSuffix(name, "."+e.Zone) && name != e.Zone {
		return fmt.Errorf("acmetest: %s is outside zone %s", name, e.Zone)
	}
	if strings.ContainsAny(name+rrtype+value, "\n;") {
		return fmt.Errorf("acmetest: record %s %s %q: invalid characters", name, rrtype, value)
	}
	rr := fmt.Sprintf("%s 60 IN %s %s", name, strings.ToUpper(rrtype), value)
	if err := e.update(ctx, e.path("dns/admin.key"), "update add "+rr); err != nil {
		return err
	}
	e.mu.Lock()
	e.records = append(e.records, rr)
	e.mu.Unlock()
	return nil
}

// update runs nsupdate with a key file and update lines, through Options.Command.
func (e *Env) update(ctx context.Context, keyFile string, lines ...string) error {
	ip, port, _ := net.SplitHostPort(e.DNSAddr)
	script := fmt.Sprintf("server %s %s\nzone %s\n%s\nsend\n", ip, port, e.Zone, strings.Join(lines, "\n"))
	cmd := e.opts.Command(ctx, e.nsupdate, "-t", "5", "-k", keyFile)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("acmetest: nsupdate: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// apparmorEnabled reads "Y" when AppArmor is on (a variable for tests).
var apparmorEnabled = "/sys/module/apparmor/parameters/enabled"

// namedBinary returns the named to run. Debian and Ubuntu confine
// /usr/sbin/named with an AppArmor profile that allows its files only under
// /etc/bind and /var/cache/bind, so it could not read a configuration in
// Dir. Profiles attach by path: a copy of the binary in Dir is not confined.
func (e *Env) namedBinary() (string, error) {
	b, err := os.ReadFile(apparmorEnabled)
	if err != nil || strings.TrimSpace(string(b)) != "Y" {
		return e.named, nil
	}
	dst := e.path("dns/named")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	data, err := os.ReadFile(e.named)
	if err != nil {
		return "", fmt.Errorf("acmetest: copy named out of its AppArmor profile: %w", err)
	}
	if err := os.WriteFile(dst, data, 0o700); err != nil {
		return "", fmt.Errorf("acmetest: copy named out of its AppArmor profile: %w", err)
	}
	return dst, nil
}
