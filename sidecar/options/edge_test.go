package options

import (
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEdge(t *testing.T) {
	base := []string{"--cert-dir", "/certs", "--inbound", ":8443=127.0.0.1:8080", "--admin", "127.0.0.1:15000", "--mode", "http"}
	cases := []struct {
		name    string
		args    []string
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{"none", base, "", func(t *testing.T, c *Config) {
			if c.Redirect != nil || c.TrustedProxies != nil || c.ProxyProtocol != nil {
				t.Fatalf("edge settings by default: %+v %v %v", c.Redirect, c.TrustedProxies, c.ProxyProtocol)
			}
		}},
		{"all", append(base, "--redirect", ":8080=443", "--redirect-host", "shop.example.com", "--redirect-host", "*.shop.example.com",
			"--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "2001:db8::1", "--proxy-protocol", "8443"), "", func(t *testing.T, c *Config) {
			if r := c.Redirect; r == nil || r.Listen != ":8080" || r.HTTPSPort != 443 || len(r.Hosts) != 2 {
				t.Fatalf("redirect %+v", c.Redirect)
			}
			want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")}
			if len(c.TrustedProxies) != 2 || c.TrustedProxies[0] != want[0] || c.TrustedProxies[1] != want[1] {
				t.Fatalf("trusted proxies %v", c.TrustedProxies)
			}
			if !c.ProxyProtocol[":8443"] || len(c.ProxyProtocol) != 1 {
				t.Fatalf("proxy protocol %v", c.ProxyProtocol)
			}
		}},
		{"redirect-no-hosts", append(base, "--redirect", ":8080=443"), "--redirect-host", nil},
		{"hosts-no-redirect", append(base, "--redirect-host", "a.example.com"), "--redirect", nil},
		{"redirect-bad-form", append(base, "--redirect", ":8080", "--redirect-host", "a.example.com"), "LISTEN=HTTPS-PORT", nil},
		{"redirect-bad-port", append(base, "--redirect", ":8080=0", "--redirect-host", "a.example.com"), "--redirect", nil},
		{"redirect-on-inbound", append(base, "--redirect", ":8443=443", "--redirect-host", "a.example.com"), "port 8443", nil},
		{"redirect-on-admin", append(base, "--redirect", ":15000=443", "--redirect-host", "a.example.com"), "--admin", nil},
		{"bad-host", append(base, "--redirect", ":8080=443", "--redirect-host", "a_b.example.com"), "--redirect-host", nil},
		{"trusted-in-tcp-mode", append(base, "--mode", "tcp", "--trusted-proxy", "10.0.0.0/8"), "--mode http", nil},
		{"bad-cidr", append(base, "--trusted-proxy", "10.0.0.0/33"), "--trusted-proxy", nil},
		{"proxy-protocol-not-inbound", append(base, "--proxy-protocol", "9443"), "--proxy-protocol", nil},
		{"proxy-protocol-not-port", append(base, "--proxy-protocol", ":8443"), "--proxy-protocol", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
