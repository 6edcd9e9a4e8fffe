package options

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	base := []string{"--cert-dir", "/certs", "--inbound", ":8443=127.0.0.1:8080"}
	cases := []struct {
		name    string
		args    []string
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{"defaults", base, "", func(t *testing.T, c *Config) {
			if c.Mode != "tcp" || c.Admin != "127.0.0.1:15000" || c.DrainTimeout != 20*time.Second || c.AgentMode() || c.AccessLog {
				t.Fatalf("defaults: %+v", c)
			}
			if !c.Matcher.Allows("spiffe://cluster.local/ns/a/sa/b") || c.Matcher.Allows("spiffe://other/ns/a/sa/b") {
				t.Fatal("default allow is not 'any ID of cluster.local'")
			}
		}},
		{"request policy on a tcp-mode default upstream", append(base, "--outbound", ":9002=b.demo.svc:8443?timeout=1s"), "need a balanced listener", nil},
		{"request policy on an http upstream", append(base, "--outbound", ":9002=b.demo.svc:8443/http?timeout=1s&retries=2"), "", func(t *testing.T, c *Config) {
			if o := c.Outbound[0]; o.Timeout != time.Second || o.Retries != 2 {
				t.Fatalf("outbound %+v", o)
			}
		}},
		{"everything", append(base,
			"--outbound", "127.0.0.1:9001=preference.demo.svc:8443#spiffe://cluster.local/ns/demo/sa/preference",
			"--outbound", ":9002=b.demo.svc:8443",
			"--trust-bundle", "/trust/ca.crt", "--external-cert-dir", "/ext/a", "--external-cert-dir", "/ext/b",
			"--ca-url", "https://podtls-controller.podtls-system.svc:8443", "--token-file", "/token", "--dns-name", "web.demo.svc", "--cert-ttl", "12h",
			"--allow", "spiffe://cluster.local/ns/demo/*", "--mode", "http", "--admin", ":15000", "--drain-timeout", "5s",
			"--max-connections", "10", "--log-level", "debug", "--pq-key-exchange", "--access-log"), "", func(t *testing.T, c *Config) {
			if len(c.Outbound) != 2 || c.Outbound[1].Listen != "localhost:9002" || c.Outbound[0].PinnedID == "" {
				t.Fatalf("outbound %+v", c.Outbound)
			}
			if !c.AgentMode() || c.CertTTL != 12*time.Hour || len(c.ExternalCertDirs) != 2 || c.Mode != "http" || !c.PostQuantum || !c.AccessLog {
				t.Fatalf("config %+v", c)
			}
			if c.Matcher.Allows("spiffe://cluster.local/ns/other/sa/x") || !c.Matcher.Allows("spiffe://cluster.local/ns/demo/sa/x") {
				t.Fatal("allow not applied")
			}
		}},
		{"no-listeners", []string{"--cert-dir", "/c"}, "--inbound or --outbound", nil},
		{"no-cert-dir", []string{"--inbound", ":8443=127.0.0.1:8080"}, "--cert-dir (or --credential-bundle) is required", nil},
		{"credential bundle instead", []string{"--credential-bundle", "/pod/credentials.pem", "--inbound", ":8443=127.0.0.1:8080"}, "", func(t *testing.T, c *Config) {
			if c.CredentialBundle != "/pod/credentials.pem" || c.CertDir != "" || c.AgentMode() {
				t.Fatalf("config %+v", c)
			}
		}},
		{"credential bundle and cert dir", append(base, "--credential-bundle", "/pod/credentials.pem"), "give one", nil},
		{"credential bundle and agent", []string{"--credential-bundle", "/p/c.pem", "--ca-url", "https://ca:8443", "--token-file", "/t", "--inbound", ":8443=127.0.0.1:8080"}, "--ca-url (the agent) writes --cert-dir", nil},
		{"inbound-protocol", append(base, "--inbound", ":9443=127.0.0.1:9090/h2c", "--mode", "http"), "", func(t *testing.T, c *Config) {
			if len(c.Inbound) != 2 || c.Inbound[0].Protocol != "" || c.Inbound[1].Protocol != "h2c" {
				t.Fatalf("inbound %+v", c.Inbound)
			}
		}},
		{"bad-inbound-protocol", append(base, "--inbound", ":9443=127.0.0.1:9090/grpc"), "protocol", nil},
		{"bad-inbound", append(base, "--inbound", "nope"), "--inbound", nil},
		{"bad-outbound", append(base, "--outbound", "0.0.0.0:1=a.b:1"), "--outbound", nil},
		{"same-port", append(base, "--outbound", "127.0.0.1:8443=a.b:1"), "port 8443", nil},
		{"bad-mode", append(base, "--mode", "udp"), "--mode", nil},
		{"bad-allow", append(base, "--allow", "spiffe://cluster.local/ns/*/sa/x"), "--allow", nil},
		{"bad-trust-domain", append(base, "--trust-domain", "UPPER"), "--trust-domain", nil},
		{"bad-admin", append(base, "--admin", "nope"), "--admin", nil},
		{"bad-duration", append(base, "--drain-timeout", "soon"), "drain-timeout", nil},
		{"zero-duration", append(base, "--handshake-timeout", "0s"), "--handshake-timeout", nil},
		{"negative-max", append(base, "--max-connections", "-1"), "--max-connections", nil},
		{"ca-url-http", append(base, "--ca-url", "http://ca:8443", "--token-file", "/t"), "--ca-url", nil},
		{"ca-url-no-token", append(base, "--ca-url", "https://ca:8443"), "--token-file", nil},
		{"dns-without-ca", append(base, "--dns-name", "a.b.svc"), "--ca-url", nil},
		{"bad-dns-name", append(base, "--ca-url", "https://ca", "--token-file", "/t", "--dns-name", "Not_DNS"), "--dns-name", nil},
		{"positional", append(base, "extra"), "unexpected argument", nil},
		{"empty-repeatable", append(base, "--allow", ""), "empty", nil},
		{"alpn", append(base, "--alpn", "h2, http/1.1"), "", func(t *testing.T, c *Config) {
			if strings.Join(c.ALPN, "|") != "h2|http/1.1" {
				t.Fatalf("alpn %q", c.ALPN)
			}
		}},
		{"alpn-empty-item", append(base, "--alpn", "h2,,x"), "-alpn", nil},
		{"alpn-http-mode", append(base, "--mode", "http", "--alpn", "h2"), "--alpn", nil},
		{"bad-log-level", append(base, "--log-level", "loud"), "log-level", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
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

func TestHelp(t *testing.T) {
	var b strings.Builder
	if _, err := Parse([]string{"--help"}, &b); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(b.String(), "-inbound LISTEN=TARGET") {
		t.Fatalf("usage:\n%s", b.String())
	}
}

func FuzzParse(f *testing.F) {
	f.Add("--cert-dir\x00/c\x00--inbound\x00:8443=127.0.0.1:8080\x00--allow\x00spiffe://cluster.local/ns/a/*")
	f.Add("--cert-dir\x00/c\x00--inbound\x00:8443=127.0.0.1:8080/h2c\x00--mode\x00http")
	f.Add("--cert-dir\x00/c\x00--outbound\x00:9001=a.b:1#spiffe://cluster.local/ns/a/sa/b\x00--mode\x00http")
	f.Add("--ca-url\x00https://x\x00--token-file\x00/t\x00--dns-name\x00a.b")
	f.Fuzz(func(t *testing.T, joined string) {
		c, err := Parse(strings.Split(joined, "\x00"), io.Discard)
		if err == nil && (c.Matcher == nil || len(c.Inbound)+len(c.Outbound) == 0 || c.CertDir == "") {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
	})
}
