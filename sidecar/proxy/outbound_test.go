package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/tlsconfig"
)

// outRig is an outbound-only proxy: the test plays the app on the loopback
// side and supplies the upstream.
type outRig struct {
	p    *Proxy
	addr string // the app's side: plaintext loopback
	reg  *metrics.Registry
	ca   *testpki.CA
}

const upstreamName = "server.demo.svc"

// newOutRig runs one outbound listener to upstream, verified with the mesh
// client config for upstreamName.
func newOutRig(t testing.TB, ca *testpki.CA, upstream string, mutate func(*Config)) *outRig {
	t.Helper()
	cli := ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/client"})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	src := source{&tls.Certificate{Certificate: [][]byte{cli.Cert.Raw}, PrivateKey: cli.Key, Leaf: cli.Cert}, roots}
	reg := metrics.NewRegistry()
	cfg := Config{
		Outbound: []Outbound{{Listen: "127.0.0.1:0", Upstream: upstream, ServerName: upstreamName}},
		ClientTLS: func(o Outbound) *tls.Config {
			return tlsconfig.Client(src, o.ServerName, o.PinnedID, tlsconfig.Options{})
		},
		DialTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second,
		Registry: reg,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	go p.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return &outRig{p: p, addr: p.Addrs()[0].String(), reg: reg, ca: ca}
}

func (r *outRig) metrics(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	if err := r.reg.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// deadPort is a loopback address nothing listens on: dialing it is refused.
func deadPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tlsUpstream serves TLS with leaf (no client certificate asked for) and
// answers every connection with "hello".
func tlsUpstream(t testing.TB, leaf *testpki.Leaf) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "hello")
			}()
		}
	}()
	return ln.Addr().String()
}

// silentUpstream accepts TCP and never speaks: the TLS handshake times out.
func silentUpstream(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	t.Cleanup(func() {
		ln.Close()
		close(held)
		for c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	return ln.Addr().String()
}

// appRead connects as the app, sends a line and reads until the proxy ends
// the connection.
func appRead(t testing.TB, addr string) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err // the reset may come before connect returns
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return nil, err // the reset may come before the write
	}
	return io.ReadAll(c)
}

// TestOutboundFailureResetsApp: in tcp mode an upstream that cannot be
// reached or fails verification resets the app's connection, so the app
// sees an error instead of a clean EOF; each failure is counted per upstream
// with a reason.
func TestOutboundFailureResetsApp(t *testing.T) {
	other := testpki.NewCA(t, "not the mesh")
	cases := []struct {
		name     string
		upstream func(t *testing.T, mesh *testpki.CA) string
		reason   string
	}{
		{"dead port", func(t *testing.T, _ *testpki.CA) string { return deadPort(t) }, "connection_refused"},
		{"unknown CA", func(t *testing.T, _ *testpki.CA) string {
			return tlsUpstream(t, other.Issue(t, testpki.LeafOptions{DNSNames: []string{upstreamName}}))
		}, "tls_unknown_ca"},
		{"wrong name", func(t *testing.T, mesh *testpki.CA) string {
			return tlsUpstream(t, mesh.Issue(t, testpki.LeafOptions{DNSNames: []string{"other.demo.svc"}}))
		}, "tls_name_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mesh := testpki.NewCA(t, "mesh")
			up := tc.upstream(t, mesh)
			r := newOutRig(t, mesh, up, nil)
			got, err := appRead(t, r.addr)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("app read %q, %v; want a connection reset", got, err)
			}
			want := fmt.Sprintf(`podtls_sidecar_outbound_failures_total{upstream=%q,reason=%q} 1`, up, tc.reason)
			if m := r.metrics(t); !strings.Contains(m, want) {
				t.Fatalf("metrics lack %s:\n%s", want, m)
			}
		})
	}
}

// TestOutboundFailureHTTP: in http mode the app gets an HTTP answer it can
// act on: 502 when the upstream refuses or fails verification, 503 when it
// cannot be reached in time, with a body naming the upstream and the reason
// and the reason in the X-Podtls-Error header.
func TestOutboundFailureHTTP(t *testing.T) {
	other := testpki.NewCA(t, "not the mesh")
	cases := []struct {
		name     string
		upstream func(t *testing.T) string
		status   int
		reason   string
	}{
		{"dead port", deadPort2, http.StatusBadGateway, "connection_refused"},
		{"unknown CA", func(t *testing.T) string {
			return tlsUpstream(t, other.Issue(t, testpki.LeafOptions{DNSNames: []string{upstreamName}}))
		}, http.StatusBadGateway, "tls_unknown_ca"},
		{"handshake timeout", silentUpstream2, http.StatusServiceUnavailable, "tls_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := tc.upstream(t)
			r := newOutRig(t, testpki.NewCA(t, "mesh"), up, func(c *Config) {
				c.Mode = ModeHTTP
				c.HandshakeTimeout = 300 * time.Millisecond
			})
			client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
			resp, err := client.Post("http://"+r.addr+"/orders", "text/plain", strings.NewReader("a body the proxy must not choke on"))
			if err != nil {
				t.Fatalf("app request: %v; want an HTTP answer", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get(ErrorHeader); got != tc.reason {
				t.Fatalf("%s: %q, want %q", ErrorHeader, got, tc.reason)
			}
			if !strings.Contains(string(body), up) || !strings.Contains(string(body), tc.reason) {
				t.Fatalf("body %q does not name the upstream %s and the reason %s", body, up, tc.reason)
			}
			want := fmt.Sprintf(`podtls_sidecar_outbound_failures_total{upstream=%q,reason=%q} 1`, up, tc.reason)
			if m := r.metrics(t); !strings.Contains(m, want) {
				t.Fatalf("metrics lack %s:\n%s", want, m)
			}
		})
	}
}

// TestOutboundFailureHTTPNotHTTP: an app that does not speak HTTP/1 on an
// http-mode outbound port kept at L4 (/tcp) gets a reset, not a reply it
// cannot parse. (A balanced port speaks h2c: see TestBalancedFailureH2C.)
func TestOutboundFailureHTTPNotHTTP(t *testing.T) {
	r := newOutRig(t, testpki.NewCA(t, "mesh"), deadPort(t), func(c *Config) {
		c.Mode = ModeHTTP
		c.Outbound[0].Protocol = OutTCP
	})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(bufio.NewReader(c))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("h2 app read %q, %v; want a connection reset", got, err)
	}
}

func deadPort2(t *testing.T) string       { return deadPort(t) }
func silentUpstream2(t *testing.T) string { return silentUpstream(t) }

func TestClassifyDial(t *testing.T) {
	cases := []struct {
		err    error
		reason string
		status int
	}{
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "connection_refused", 502},
		{&net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, "unreachable", 503},
		{&net.OpError{Op: "dial", Err: syscall.ENETUNREACH}, "unreachable", 503},
		{&net.DNSError{Err: "no such host", Name: "x.demo.svc", IsNotFound: true}, "no_such_host", 503},
		{&net.DNSError{Err: "server misbehaving", Name: "x.demo.svc", IsTemporary: true}, "dns_error", 503},
		{&net.OpError{Op: "dial", Err: &timeoutErr{}}, "timeout", 503},
		{context.Canceled, "shutting_down", 503},
		{errors.New("something else"), "dial_error", 502},
	}
	for _, tc := range cases {
		f := classifyDial(tc.err)
		if f.reason != tc.reason || f.status != tc.status {
			t.Errorf("classifyDial(%v) = %s %d, want %s %d", tc.err, f.reason, f.status, tc.reason, tc.status)
		}
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }
