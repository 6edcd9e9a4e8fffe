package contract

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseEdge(t *testing.T) {
	base := map[string]string{Inbound: "8443:8080", ExternalHosts: "shop.example.com", Upstreams: "a.demo.svc:8443@9001"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name     string
		ann      map[string]string
		redirect *RedirectPort
		trusted  []string
		pp       []int32
		wantErr  []string
	}{
		{name: "none", ann: base},
		{name: "redirect-default-https-port", ann: with(Redirect, "8081"), redirect: &RedirectPort{Listen: 8081, HTTPSPort: 8443}},
		{name: "redirect-to-443", ann: with(Redirect, " 80:443 "), redirect: &RedirectPort{Listen: 80, HTTPSPort: 443}},
		{name: "trusted", ann: with(TrustedProxies, "10.0.0.0/8, 192.168.1.5,2001:db8::/32,10.1.2.3/8"), trusted: []string{"10.0.0.0/8", "192.168.1.5/32", "2001:db8::/32"}},
		{name: "proxy-protocol", ann: with(ProxyProtocol, "8443"), pp: []int32{8443}},
		{name: "redirect-no-hosts", ann: with(Redirect, "8081", ExternalHosts, ""), wantErr: []string{Redirect, ExternalHosts}},
		{name: "redirect-no-inbound", ann: with(Redirect, "8081:443", Inbound, ""), wantErr: []string{Redirect, Inbound}},
		{name: "redirect-on-inbound", ann: with(Redirect, "8443"), wantErr: []string{Redirect, "already an inbound port"}},
		{name: "redirect-on-app", ann: with(Redirect, "8080"), wantErr: []string{Redirect, "the app's port"}},
		{name: "redirect-on-admin", ann: with(Redirect, strconv.Itoa(AdminPort)), wantErr: []string{Redirect, "admin"}},
		{name: "redirect-on-upstream", ann: with(Redirect, "9001"), wantErr: []string{Redirect, "upstream"}},
		{name: "redirect-bad", ann: with(Redirect, "http"), wantErr: []string{Redirect, "PORT[:HTTPS-PORT]"}},
		{name: "redirect-bad-https", ann: with(Redirect, "8081:0"), wantErr: []string{Redirect}},
		{name: "trusted-bad", ann: with(TrustedProxies, "10.0.0.0/33"), wantErr: []string{TrustedProxies, "CIDR"}},
		{name: "trusted-hostname", ann: with(TrustedProxies, "lb.example.com"), wantErr: []string{TrustedProxies}},
		{name: "proxy-protocol-not-inbound", ann: with(ProxyProtocol, "9443"), wantErr: []string{ProxyProtocol, "not an inbound port"}},
		{name: "proxy-protocol-bool", ann: with(ProxyProtocol, "true"), wantErr: []string{ProxyProtocol}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, _, err := Parse(tc.ann, "demo", Defaults{TrustDomain: "cluster.local"})
			if len(tc.wantErr) > 0 {
				for _, w := range tc.wantErr {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Errorf("error %v, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(spec.Redirect, tc.redirect) || !reflect.DeepEqual(spec.TrustedProxies, tc.trusted) || !reflect.DeepEqual(spec.ProxyProtocol, tc.pp) {
				t.Fatalf("got redirect %+v trusted %v proxy-protocol %v", spec.Redirect, spec.TrustedProxies, spec.ProxyProtocol)
			}
		})
	}
}

func TestEdgeWarnings(t *testing.T) {
	_, warns, err := Parse(map[string]string{Inbound: "8443:8080", TrustedProxies: "10.0.0.0/8"}, "demo", Defaults{TrustDomain: "cluster.local"})
	if err != nil || len(warns) != 1 || !strings.Contains(warns[0], TrustedProxies) || !strings.Contains(warns[0], `"http"`) {
		t.Fatalf("trusted proxies in tcp mode: warnings %q, %v", warns, err)
	}
}

// FuzzParseEdge: what Parse accepts for the edge annotations is well formed
// and collides with no other port.
func FuzzParseEdge(f *testing.F) {
	for _, s := range []string{"8081", "80:443", "8443", "0", "65535:1", "10.0.0.0/8,::1", "8443,8443"} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, redirect, trusted, pp string) {
		ann := map[string]string{Inbound: "8443:8080", ExternalHosts: "shop.example.com",
			Redirect: redirect, TrustedProxies: trusted, ProxyProtocol: pp}
		spec, _, err := Parse(ann, "demo", Defaults{TrustDomain: "cluster.local"})
		if err != nil {
			return
		}
		if r := spec.Redirect; r != nil && (r.Listen < 1 || r.HTTPSPort < 1 || r.Listen == 8443 || r.Listen == 8080 || r.Listen == AdminPort) {
			t.Fatalf("redirect %+v accepted", r)
		}
		for _, p := range spec.ProxyProtocol {
			if p != 8443 {
				t.Fatalf("proxy-protocol port %d is not an inbound port", p)
			}
		}
		for _, c := range spec.TrustedProxies {
			if strings.ContainsAny(c, ", ") || !strings.Contains(c, "/") {
				t.Fatalf("trusted proxy %q is not one CIDR", c)
			}
		}
	})
}
