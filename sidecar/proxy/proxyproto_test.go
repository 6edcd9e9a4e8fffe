package proxy

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// TestProxyProtocol: on a proxy-protocol port the source of a v2 header
// (written by the library's own writer) is the peer the app sees in
// X-Forwarded-For; a connection without a header, or with a v1 header, is
// refused and counted.
func TestProxyProtocol(t *testing.T) {
	app, got := headerApp(t)
	r := newRig(t, app, func(c *Config) {
		c.Mode = ModeHTTP
		c.ProxyProtocol = map[string]bool{c.Inbound[0].Listen: true}
	})
	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 51000}
	for _, tc := range []struct {
		name    string
		header  *proxyproto.Header
		wantXFF string // "" = refused
	}{
		{"v2-ipv4", proxyproto.HeaderProxyFromAddrs(2, src, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}), "203.0.113.7"},
		{"v2-ipv6", proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 8443}), "2001:db8::7"},
		{"v2-local-health-check", &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}, "127.0.0.1"},
		{"v1-refused", proxyproto.HeaderProxyFromAddrs(1, src, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}), ""},
		{"no-header-refused", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.header != nil {
				if _, err := tc.header.WriteTo(raw); err != nil {
					t.Fatal(err)
				}
			}
			c := tls.Client(raw, r.client)
			err = c.Handshake()
			if tc.wantXFF == "" {
				if err == nil {
					// TLS 1.3: the server's verdict arrives with the first read.
					_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: server.demo.svc\r\n\r\n"))
					_, err = c.Read(make([]byte, 1))
				}
				if err == nil {
					t.Fatal("served without a valid PROXY v2 header")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: server.demo.svc\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("response %v, %v", resp, err)
			}
			if h := <-got; h.Get("X-Forwarded-For") != tc.wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", h.Get("X-Forwarded-For"), tc.wantXFF)
			}
		})
	}
	var b strings.Builder
	_ = r.reg.WriteText(&b)
	for _, want := range []string{`reason="no_proxy_header"} 1`, `reason="bad_proxy_header"} 1`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
}
