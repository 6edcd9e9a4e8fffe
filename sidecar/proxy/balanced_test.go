package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/tlsconfig"
)

// staticDiscovery hands a fixed endpoint set to every balanced upstream.
type staticDiscovery struct {
	mu      sync.Mutex
	addrs   []string
	updates []func([]string)
}

func (d *staticDiscovery) Watch(ctx context.Context, _ string, update func([]string)) {
	d.mu.Lock()
	update(d.addrs)
	d.updates = append(d.updates, update)
	d.mu.Unlock()
	<-ctx.Done()
}

func (d *staticDiscovery) set(addrs []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = addrs
	for _, u := range d.updates {
		u(addrs)
	}
}

// meshServer runs an http-mode inbound sidecar for upstreamName in front
// of target, with a certificate of ca.
func meshServer(t testing.TB, ca *testpki.CA, target, proto string) string {
	t.Helper()
	srv := ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/server", DNSNames: []string{upstreamName}})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	allow, _ := identity.NewMatcher("cluster.local", nil)
	p, err := New(Config{
		Mode:    ModeHTTP,
		Inbound: []Inbound{{Listen: "127.0.0.1:0", Target: target, Protocol: proto}},
		ServerTLS: func(alpn []string) *tls.Config {
			src := source{&tls.Certificate{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key, Leaf: srv.Cert}, roots}
			return tlsconfig.Server(src, allow, tlsconfig.Options{NextProtos: alpn})
		},
	})
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
	return p.Addrs()[0].String()
}

// namedApps starts n HTTP apps answering their name, each behind its own
// mesh sidecar; it returns the sidecars' addresses, app i named "app-i".
func namedApps(t testing.TB, ca *testpki.CA, n int) []string {
	t.Helper()
	var addrs []string
	for i := range n {
		name := fmt.Sprintf("app-%d", i)
		app := serveHTTP(t.(*testing.T), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("X-App", name)
			_, _ = fmt.Fprintf(w, "%s host=%s id=%s", name, r.Host, r.Header.Get(ClientIDHeader))
		}))
		addrs = append(addrs, meshServer(t, ca, app, ""))
	}
	return addrs
}

func balancedRig(t *testing.T, ca *testpki.CA, d *staticDiscovery) *outRig {
	return newOutRig(t, ca, upstreamName+":8443", func(c *Config) {
		c.Outbound[0].Protocol = OutHTTP
		c.Discovery = d
		// Least-request: latencies here are noise (the algorithm's
		// latency weighing is tested in package balance).
		c.Balance.Floor = time.Minute
	})
}

// h2cClient speaks HTTP/2 with prior knowledge over one connection, as a
// gRPC app does.
func h2cClient() *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &protos, MaxConnsPerHost: 1}}
}

// TestBalancedSpreadsRequests: one app connection (h2c, and HTTP/1.1
// keep-alive) reaches every endpoint, each with a third of the requests.
func TestBalancedSpreadsRequests(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	d := &staticDiscovery{addrs: namedApps(t, ca, 3)}
	r := balancedRig(t, ca, d)
	for name, client := range map[string]*http.Client{
		"h2c":      h2cClient(),
		"HTTP/1.1": {Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}},
	} {
		t.Run(name, func(t *testing.T) {
			counts := map[string]int{}
			const n = 900 // binomial at worst: ±20% is 4σ of an even share
			for i := range n {
				res, err := client.Post("http://"+r.addr+"/x", "text/plain", strings.NewReader("body"))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %s %s", i, res.Status, body)
				}
				if i == 0 {
					// The upstream sees its own name and the caller's identity.
					if want := "host=" + upstreamName + ":8443 id=spiffe://cluster.local/ns/demo/sa/client"; !strings.Contains(string(body), want) {
						t.Fatalf("body %q lacks %q", body, want)
					}
				}
				counts[res.Header.Get("X-App")]++
			}
			for i := range 3 {
				got := counts[fmt.Sprintf("app-%d", i)]
				if math.Abs(float64(got)-n/3) > 0.2*n/3 {
					t.Errorf("app-%d got %d of %d requests, want %d ±20%%: %v", i, got, n, n/3, counts)
				}
			}
		})
	}
	waitSample(t, r.reg, `podtls_sidecar_http_requests_total{direction="outbound",upstream="server.demo.svc:8443",peer="spiffe://cluster.local/ns/demo/sa/server",code_class="2xx"}`, "1800")
}

// TestBalancedConnectFailure: an endpoint that refuses connections costs
// no request: each goes to another endpoint (bodies included), and the dead
// one is ejected.
func TestBalancedConnectFailure(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	dead := deadPort(t)
	d := &staticDiscovery{addrs: append([]string{dead}, namedApps(t, ca, 2)...)}
	r := balancedRig(t, ca, d)
	client := h2cClient()
	for i := range 50 {
		res, err := client.Post("http://"+r.addr+"/x", "text/plain", strings.NewReader(strings.Repeat("b", 1000)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s (%s)", i, res.Status, res.Header.Get(ErrorHeader))
		}
	}
	u := r.p.listeners[0].balanced
	if got := u.bal.Ejected(); !slices.Equal(got, []string{dead}) {
		t.Fatalf("ejected %v, want [%s]", got, dead)
	}
	if m, want := r.metrics(t), `podtls_sidecar_outbound_failures_total{upstream="server.demo.svc:8443",reason="connection_refused"} 1`; !strings.Contains(m, want) {
		t.Fatalf("metrics lack %s (one failure, then ejected):\n%s", want, m)
	}
}

// TestBalancedFailureH2C: with no endpoint reachable, an h2c app gets an
// HTTP answer per request: 502 with the reason.
func TestBalancedFailureH2C(t *testing.T) {
	r := balancedRig(t, testpki.NewCA(t, "mesh"), &staticDiscovery{addrs: []string{deadPort(t), deadPort(t)}})
	res, err := h2cClient().Get("http://" + r.addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || res.Header.Get(ErrorHeader) != "connection_refused" || res.Proto != "HTTP/2.0" {
		t.Fatalf("%s %s %s=%q; want HTTP/2.0 502 connection_refused", res.Proto, res.Status, ErrorHeader, res.Header.Get(ErrorHeader))
	}
}

// TestBalancedGRPC: a grpc-go app calls its plaintext outbound port (h2c);
// unary calls with status codes and a bidirectional stream cross to a gRPC
// app behind an http-mode sidecar.
func TestBalancedGRPC(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	var addrs []string
	for range 2 {
		app, _ := newGRPCApp(t)
		addrs = append(addrs, meshServer(t, ca, app, ProtoH2C))
	}
	r := balancedRig(t, ca, &staticDiscovery{addrs: addrs})
	cc, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 10 {
		res, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload(fmt.Sprint(i))})
		if err != nil || string(res.GetPayload().GetBody()) != fmt.Sprint(i) {
			t.Fatalf("UnaryCall %d: %v, %v", i, res, err)
		}
	}
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload("x"),
		ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "nope" {
		t.Fatalf("status %v, want NotFound nope", s)
	}
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		msg := fmt.Sprint("ping-", i)
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(msg)}); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil || string(res.GetPayload().GetBody()) != msg {
			t.Fatalf("stream message %d: %v, %v", i, res, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v, want EOF", err)
	}
}

// TestBalancedWebSocket: an Upgrade from the app crosses a balanced port
// (on an HTTP/1.1 connection of its own) to a WebSocket app.
func TestBalancedWebSocket(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	app, _ := wsEchoApp(t)
	r := balancedRig(t, ca, &staticDiscovery{addrs: []string{meshServer(t, ca, app, "")}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+r.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial through the balanced port: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_, got, err := c.Read(ctx)
	if err != nil || string(got) != "echo:hi" {
		t.Fatalf("read %q, %v; want echo:hi", got, err)
	}
	_ = c.Close(websocket.StatusNormalClosure, "bye")
}

// TestBalancedEndpointsChange: requests follow the endpoint set as it
// changes, and go to the upstream's own address while it is unknown.
func TestBalancedEndpointsChange(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	apps := namedApps(t, ca, 2)
	d := &staticDiscovery{addrs: apps[:1]}
	r := balancedRig(t, ca, d)
	client := h2cClient()
	get := func() string {
		t.Helper()
		res, err := client.Get("http://" + r.addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.Header.Get("X-App") + res.Header.Get(ErrorHeader)
	}
	for range 5 {
		if got := get(); got != "app-0" {
			t.Fatalf("answer from %q, want app-0", got)
		}
	}
	d.set(apps[1:])
	for range 5 {
		if got := get(); got != "app-1" {
			t.Fatalf("after the update: answer from %q, want app-1", got)
		}
	}
	d.set(nil) // unknown: server.demo.svc:8443 is dialed, and does not resolve
	if got := get(); got != "no_such_host" && got != "dns_error" {
		t.Fatalf("with no endpoints known: %q, want the upstream's name dialed (no_such_host)", got)
	}
}
