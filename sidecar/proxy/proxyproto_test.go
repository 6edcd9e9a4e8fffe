package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
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

// prefixConn sends pre with its first Write, in the same segment as the
// ClientHello, as load balancers do.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Write(b []byte) (int, error) {
	if c.pre != nil {
		pre := c.pre
		c.pre = nil
		if _, err := c.Conn.Write(append(pre, b...)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestProxyProtocolTCP: in tcp mode the bytes after a header that shares
// its segment with the ClientHello all reach the app, half-close included.
func TestProxyProtocolTCP(t *testing.T) {
	r := newRig(t, echoServer(t), func(c *Config) { c.ProxyProtocol = map[string]bool{c.Inbound[0].Listen: true} })
	raw, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	hdr, err := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, raw.RemoteAddr()).Format()
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(&prefixConn{Conn: raw, pre: hdr}, r.client)
	payload := strings.Repeat("y", 70_000)
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got:"+payload {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(payload)+4)
	}
}
