package proxy

import (
	"strings"
	"testing"
	"time"
)

func TestParseInbound(t *testing.T) {
	cases := []struct {
		in      string
		want    Inbound
		wantErr string
	}{
		{":8443=127.0.0.1:8080", Inbound{Listen: ":8443", Target: "127.0.0.1:8080"}, ""},
		{"0.0.0.0:8443=localhost:8080", Inbound{Listen: "0.0.0.0:8443", Target: "localhost:8080"}, ""},
		{"[::]:8443=[::1]:8080", Inbound{Listen: "[::]:8443", Target: "[::1]:8080"}, ""},
		{":8443=127.0.0.1:8080/h2c", Inbound{Listen: ":8443", Target: "127.0.0.1:8080", Protocol: ProtoH2C}, ""},
		{":8443=127.0.0.1:8080/http1", Inbound{Listen: ":8443", Target: "127.0.0.1:8080", Protocol: ProtoHTTP1}, ""},
		{":8443=[::1]:8080/tcp", Inbound{Listen: ":8443", Target: "[::1]:8080", Protocol: ProtoTCP}, ""},
		{":8443=127.0.0.1:8080/", Inbound{}, "protocol"},
		{":8443=127.0.0.1:8080/grpc", Inbound{}, "protocol"},
		{":8443=127.0.0.1:8080/H2C", Inbound{}, "protocol"},
		{":8443=127.0.0.1:8080/h2c/tcp", Inbound{}, "protocol"},
		{"8443=127.0.0.1:8080", Inbound{}, "listen"},
		{":8443", Inbound{}, "LISTEN=TARGET"},
		{":0=127.0.0.1:8080", Inbound{}, "port"},
		{":65536=127.0.0.1:8080", Inbound{}, "port"},
		{":08443=127.0.0.1:8080", Inbound{}, "port"},
		{":8443=:8080", Inbound{}, "host is empty"},
		{":8443=bad_host:8080", Inbound{}, "target"},
		{"example.com:8443=127.0.0.1:8080", Inbound{}, "IP address"},
	}
	for _, tc := range cases {
		got, err := ParseInbound(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseInbound(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseInbound(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseOutbound(t *testing.T) {
	cases := []struct {
		in      string
		want    Outbound
		wantErr string
	}{
		{"127.0.0.1:9001=preference.demo.svc:8443", Outbound{Listen: "127.0.0.1:9001", Upstream: "preference.demo.svc:8443", ServerName: "preference.demo.svc"}, ""},
		{"127.0.0.1:9002=web-2.web.db.svc:8443", Outbound{Listen: "127.0.0.1:9002", Upstream: "web-2.web.db.svc:8443", ServerName: "web-2.web.db.svc"}, ""},
		{":9001=preference.demo.svc:8443#spiffe://cluster.local/ns/demo/sa/preference",
			Outbound{Listen: "localhost:9001", Upstream: "preference.demo.svc:8443", ServerName: "preference.demo.svc", PinnedID: "spiffe://cluster.local/ns/demo/sa/preference"}, ""},
		{"localhost:9001=10.0.0.1:8443", Outbound{Listen: "localhost:9001", Upstream: "10.0.0.1:8443", ServerName: "10.0.0.1"}, ""},
		{"[::1]:9001=a.b:1", Outbound{Listen: "[::1]:9001", Upstream: "a.b:1", ServerName: "a.b"}, ""},
		{"127.0.0.1:9002=tls://api.stripe.com:443", Outbound{Listen: "127.0.0.1:9002", Upstream: "api.stripe.com:443", ServerName: "api.stripe.com", Public: true}, ""},
		{"127.0.0.1:9002=tls://api.stripe.com:443#spiffe://cluster.local/ns/a/sa/b", Outbound{}, "no SPIFFE ID"},
		{"127.0.0.1:9002=https://api.stripe.com:443", Outbound{}, "tls://"},
		{"127.0.0.1:9001=a.b:1/http?timeout=2s&retries=1#spiffe://cluster.local/ns/a/sa/b",
			Outbound{Listen: "127.0.0.1:9001", Upstream: "a.b:1", ServerName: "a.b", Protocol: OutHTTP, Timeout: 2 * time.Second, Retries: 1, PinnedID: "spiffe://cluster.local/ns/a/sa/b"}, ""},
		{"127.0.0.1:9001=a.b:1?retries=3", Outbound{Listen: "127.0.0.1:9001", Upstream: "a.b:1", ServerName: "a.b", Retries: 3}, ""},
		{"127.0.0.1:9001=a.b:1/tcp?timeout=2s", Outbound{}, "need protocol http"},
		{"127.0.0.1:9001=a.b:1/http?timeout=forever", Outbound{}, "request policy"},
		{"0.0.0.0:9001=a.b:1", Outbound{}, "loopback"},
		{"10.1.2.3:9001=a.b:1", Outbound{}, "loopback"},
		{"127.0.0.1:9001=a.b:1#", Outbound{}, "pinned"},
		{"127.0.0.1:9001=a.b:1#spiffe://cluster.local/ns/x", Outbound{}, "pinned"},
		{"127.0.0.1:9001=a.b", Outbound{}, "upstream"},
		{"127.0.0.1:9001", Outbound{}, "LISTEN="},
		{"127.0.0.1:9001=a.b:1/http", Outbound{Listen: "127.0.0.1:9001", Upstream: "a.b:1", ServerName: "a.b", Protocol: OutHTTP}, ""},
		{"127.0.0.1:9001=a.b:1/tcp#spiffe://cluster.local/ns/a/sa/b", Outbound{Listen: "127.0.0.1:9001", Upstream: "a.b:1", ServerName: "a.b", Protocol: OutTCP, PinnedID: "spiffe://cluster.local/ns/a/sa/b"}, ""},
		{"127.0.0.1:9002=tls://api.stripe.com:443/http", Outbound{Listen: "127.0.0.1:9002", Upstream: "api.stripe.com:443", ServerName: "api.stripe.com", Public: true, Protocol: OutHTTP}, ""},
		{"127.0.0.1:9001=a.b:1/h2c", Outbound{}, "want tcp or http"},
		{"127.0.0.1:9001=a.b:1/", Outbound{}, "want tcp or http"},
	}
	for _, tc := range cases {
		got, err := ParseOutbound(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseOutbound(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseOutbound(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseInbound(f *testing.F) {
	for _, s := range []string{":8443=127.0.0.1:8080", "[::]:1=[::1]:2", ":1=a:2/h2c", ":1=a:2/", "/tcp", "=", ":1=a:1=b", "a:b=c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in, err := ParseInbound(s)
		if err != nil {
			return
		}
		// A parsed spec renders back to an equivalent, parsable spec.
		again, err := ParseInbound(in.String())
		if err != nil || again != in {
			t.Fatalf("round trip %q -> %+v -> %+v, %v", s, in, again, err)
		}
	})
}

func FuzzParseOutbound(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9001=preference.demo.svc:8443", ":9001=a.b:1#spiffe://cluster.local/ns/a/sa/b", "[::1]:1=[::1]:2", "=#", "127.0.0.1:1=tls://a.b:2", ":1=tls://[::1]:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOutbound(s)
		if err != nil {
			return
		}
		again, err := ParseOutbound(o.String())
		if err != nil || again != o {
			t.Fatalf("round trip %q -> %+v -> %+v, %v", s, o, again, err)
		}
	})
}
