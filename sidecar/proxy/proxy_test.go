package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/tlsconfig"
)

var noDeadline time.Time

type source struct {
	cert  *tls.Certificate
	roots *x509.CertPool
}

func (s source) MeshCertificate() *tls.Certificate           { return s.cert }
func (s source) ExternalCertificate(string) *tls.Certificate { return nil }
func (s source) TrustPool() *x509.CertPool                   { return s.roots }

type rig struct {
	p      *Proxy
	addr   string
	client *tls.Config
	reg    *metrics.Registry
}

// newRig runs an inbound TCP-mode proxy in front of target.
func newRig(t testing.TB, target string, mutate func(*Config)) *rig {
	t.Helper()
	ca := testpki.NewCA(t, "mesh")
	srv := ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/server", DNSNames: []string{"server.demo.svc"}})
	cli := ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/client"})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	allow, _ := identity.NewMatcher("cluster.local", nil)
	reg := metrics.NewRegistry()
	cfg := Config{
		Inbound: []Inbound{{Listen: "127.0.0.1:0", Target: target}},
		ServerTLS: func(alpn []string) *tls.Config {
			src := source{&tls.Certificate{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key, Leaf: srv.Cert}, roots}
			return tlsconfig.Server(src, allow, tlsconfig.Options{NextProtos: alpn})
		},
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
	return &rig{p: p, addr: p.Addrs()[0].String(), reg: reg, client: &tls.Config{
		ServerName: "server.demo.svc", RootCAs: roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cli.Cert.Raw}, PrivateKey: cli.Key, Leaf: cli.Cert}},
	}}
}

func (r *rig) dial(t testing.TB) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", r.addr, r.client)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// echoServer reads everything until EOF and then answers with what it read,
// which only works if the proxy forwards the client's half-close.
func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("got:"), b...))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestHalfClose(t *testing.T) {
	r := newRig(t, echoServer(t), nil)
	c := r.dial(t)
	defer c.Close()
	payload := strings.Repeat("x", 100_000)
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "got:"+payload {
		t.Fatalf("got %d bytes, want %d", len(got), len(payload)+4)
	}
}

func TestMaxConnections(t *testing.T) {
	r := newRig(t, echoServer(t), func(c *Config) { c.MaxConnections = 1 })
	first := r.dial(t)
	defer first.Close()
	poll.Eventually(t, 10*time.Second, "the first connection to be counted", func() (bool, string) {
		return r.p.Open() == 1, fmt.Sprintf("%d open", r.p.Open())
	})
	c, err := tls.Dial("tcp", r.addr, r.client)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatal("second connection served above --max-connections")
	}
	var b strings.Builder
	_ = r.reg.WriteText(&b)
	if !strings.Contains(b.String(), `podtls_sidecar_connections_rejected_total{reason="max_connections"} 1`) {
		t.Fatalf("rejection not counted:\n%s", b.String())
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	app, received := sinkServer(t)
	r := newRig(t, app, func(c *Config) { c.IdleTimeout = idle })
	c := r.dial(t)
	defer c.Close()
	// Keep it busy past the idle timeout: activity keeps it open. Each ping
	// is sent once the app has received the previous one, so the gaps stay
	// well below the idle timeout, for more than the timeout in all.
	for busy := time.Now(); time.Since(busy) < idle+200*time.Millisecond; {
		want := received.Load() + int64(len("ping"))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatalf("connection closed while active: %v", err)
		}
		poll.Eventually(t, 10*time.Second, "the ping to reach the app", func() (bool, string) {
			return received.Load() >= want, fmt.Sprintf("app received %d bytes, want %d", received.Load(), want)
		})
	}
	start := time.Now()
	_, err := io.ReadAll(c) // silent now: the proxy must close it
	if err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle connection closed after %s", d)
	}
}

func TestShutdownForcesAfterDeadline(t *testing.T) {
	r := newRig(t, echoServer(t), nil)
	c := r.dial(t)
	defer c.Close()
	if _, err := io.WriteString(c, "held open"); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "the connection to be open", func() (bool, string) {
		return r.p.Open() == 1, fmt.Sprintf("%d open", r.p.Open())
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := r.p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Shutdown took %s", d)
	}
	if r.p.Open() != 0 {
		t.Fatalf("%d connections still open", r.p.Open())
	}
	if _, err := net.DialTimeout("tcp", r.addr, 500*time.Millisecond); err == nil {
		t.Fatal("listener still open")
	}
}

func TestDialFailureClosesClient(t *testing.T) {
	r := newRig(t, "127.0.0.1:1", func(c *Config) { c.DialTimeout = 500 * time.Millisecond })
	c := r.dial(t)
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded although the app is down")
	}
}

// TestClientResetClosesAppConnection: a client that vanishes with a reset
// must not leave its connection to the app open.
func TestClientResetClosesAppConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	appGot, appClosed := make(chan struct{}), make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// An idle keep-alive app: reads until closed, telling the test when
		// the request has arrived.
		buf, got := make([]byte, 512), false
		for {
			n, err := c.Read(buf)
			if n > 0 && !got {
				got = true
				close(appGot)
			}
			if err != nil {
				break
			}
		}
		close(appClosed)
	}()
	r := newRig(t, ln.Addr().String(), nil)
	raw, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, r.client)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	select { // the proxy has dialed the app and forwarded the request
	case <-appGot:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the app")
	}
	_ = raw.(*net.TCPConn).SetLinger(0)
	raw.Close() // RST, no close_notify
	select {
	case <-appClosed:
	case <-time.After(2 * time.Second):
		t.Fatal("app connection still open after the client reset")
	}
	poll.Eventually(t, time.Second, "the connection to be uncounted", func() (bool, string) {
		return r.p.Open() == 0, fmt.Sprintf("%d connections still counted", r.p.Open())
	})
}

// sinkServer is an app that reads and counts every byte and never answers.
func sinkServer(t testing.TB) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					k, err := c.Read(buf)
					n.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), &n
}

func TestRejectLog(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var r rejectLog
	steps := []struct {
		at     time.Duration
		wantN  int
		wantOK bool
	}{
		{0, 1, true}, // the first refusal is logged at once
		{time.Second, 0, false},
		{5 * time.Second, 0, false},
		{rejectLogEvery, 3, true}, // then with the count since
		{rejectLogEvery + time.Second, 0, false},
		{3 * rejectLogEvery, 2, true},
	}
	for i, s := range steps {
		n, ok := r.due(t0.Add(s.at))
		if n != s.wantN || ok != s.wantOK {
			t.Errorf("step %d (+%s): due = %d, %v; want %d, %v", i, s.at, n, ok, s.wantN, s.wantOK)
		}
	}
}
