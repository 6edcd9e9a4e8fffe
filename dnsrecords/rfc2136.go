package dnsrecords

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// RFC2136 is a zone on a DNS server that takes RFC 2136 updates signed with
// a TSIG key and transfers the zone (AXFR) to the same key: BIND, Knot,
// PowerDNS, Windows DNS.
type RFC2136 struct {
	Server    string // host:port
	Zone      string // e.g. "example.test" (trailing dot optional)
	KeyName   string
	Secret    string // base64
	Algorithm string // e.g. "hmac-sha256"; default hmac-sha256
	Timeout   time.Duration
}

func (z *RFC2136) zone() string { return dns.Fqdn(strings.ToLower(z.Zone)) }

func (z *RFC2136) alg() string {
	if z.Algorithm == "" {
		return dns.HmacSHA256
	}
	return dns.Fqdn(strings.ToLower(z.Algorithm))
}

func (z *RFC2136) timeout() time.Duration {
	if z.Timeout == 0 {
		return 10 * time.Second
	}
	return z.Timeout
}

// Records transfers the zone and returns its A, AAAA, CNAME and TXT RRsets.
func (z *RFC2136) Records(ctx context.Context) ([]Record, error) {
	m := new(dns.Msg)
	m.SetAxfr(z.zone())
	m.SetTsig(dns.Fqdn(z.KeyName), z.alg(), 300, time.Now().Unix())
	t := &dns.Transfer{TsigSecret: map[string]string{dns.Fqdn(z.KeyName): z.Secret},
		DialTimeout: z.timeout(), ReadTimeout: z.timeout(), WriteTimeout: z.timeout()}
	if d, ok := ctx.Deadline(); ok {
		t.ReadTimeout = time.Until(d)
	}
	envs, err := t.In(m, z.Server)
	if err != nil {
		return nil, fmt.Errorf("zone transfer of %s from %s: %w", z.zone(), z.Server, err)
	}
	sets := map[Key]*Record{}
	var order []Key
	for env := range envs {
		if env.Error != nil {
			return nil, fmt.Errorf("zone transfer of %s from %s: %w", z.zone(), z.Server, env.Error)
		}
		for _, rr := range env.RR {
			r, ok := fromRR(rr)
			if !ok {
				continue
			}
			k := r.Key()
			if sets[k] == nil {
				sets[k] = &Record{Name: r.Name, Type: r.Type, TTL: r.TTL}
				order = append(order, k)
			}
			sets[k].Targets = append(sets[k].Targets, r.Targets...)
		}
	}
	out := make([]Record, 0, len(order))
	for _, k := range order {
		out = append(out, sets[k].Normalize())
	}
	return out, nil
}

// Apply sends changes as one signed UPDATE: the server applies all of them
// or none.
func (z *RFC2136) Apply(ctx context.Context, ch Changes) error {
	if ch.Empty() {
		return nil
	}
	m := new(dns.Msg)
	m.SetUpdate(z.zone())
	for _, r := range ch.Delete {
		m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: dns.Fqdn(r.Name), Rrtype: dns.StringToType[r.Type], Class: dns.ClassINET}}})
	}
	for _, r := range ch.Update {
		m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: dns.Fqdn(r.Name), Rrtype: dns.StringToType[r.Type], Class: dns.ClassINET}}})
	}
	for _, rs := range [][]Record{ch.Update, ch.Create} {
		for _, r := range rs {
			rrs, err := toRRs(r)
			if err != nil {
				return err
			}
			m.Insert(rrs)
		}
	}
	m.SetTsig(dns.Fqdn(z.KeyName), z.alg(), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: z.timeout(), TsigSecret: map[string]string{dns.Fqdn(z.KeyName): z.Secret}}
	resp, _, err := c.ExchangeContext(ctx, m, z.Server)
	if err != nil {
		return fmt.Errorf("update of %s at %s: %w", z.zone(), z.Server, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("update of %s at %s: %s", z.zone(), z.Server, dns.RcodeToString[resp.Rcode])
	}
	return nil
}

func fromRR(rr dns.RR) (Record, bool) {
	h := rr.Header()
	r := Record{Name: strings.TrimSuffix(strings.ToLower(h.Name), "."), TTL: int64(h.Ttl)}
	switch v := rr.(type) {
	case *dns.A:
		r.Type, r.Targets = TypeA, []string{v.A.String()}
	case *dns.AAAA:
		r.Type, r.Targets = TypeAAAA, []string{v.AAAA.String()}
	case *dns.CNAME:
		r.Type, r.Targets = TypeCNAME, []string{strings.TrimSuffix(v.Target, ".")}
	case *dns.TXT:
		r.Type, r.Targets = TypeTXT, []string{strconv.Quote(strings.Join(v.Txt, ""))}
	default:
		return Record{}, false
	}
	return r, true
}

func toRRs(r Record) ([]dns.RR, error) {
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: dns.Fqdn(r.Name), Rrtype: t, Class: dns.ClassINET, Ttl: uint32(r.TTL)}
	}
	var out []dns.RR
	for _, t := range r.Targets {
		switch r.Type {
		case TypeA, TypeAAAA:
			ip := net.ParseIP(t)
			if ip == nil || (r.Type == TypeA) != (ip.To4() != nil) {
				return nil, fmt.Errorf("record %s: %q is not an %s address", r.Name, t, r.Type)
			}
			if r.Type == TypeA {
				out = append(out, &dns.A{Hdr: hdr(dns.TypeA), A: ip.To4()})
			} else {
				out = append(out, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip})
			}
		case TypeCNAME:
			out = append(out, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(t)})
		case TypeTXT:
			s, err := strconv.Unquote(t)
			if err != nil {
				s = t
			}
			out = append(out, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{s}})
		default:
			return nil, errors.New("record type " + r.Type + " is not published")
		}
	}
	return out, nil
}
