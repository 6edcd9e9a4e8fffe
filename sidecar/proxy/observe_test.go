package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/sidecar/metrics"
)

const clientID = "spiffe://cluster.local/ns/demo/sa/client"

// accessLog collects the JSON lines of an access logger.
type accessLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *accessLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *accessLog) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

// lines returns the raw lines and their decoded form.
func (l *accessLog) lines(t testing.TB) ([]string, []map[string]any) {
	t.Helper()
	l.mu.Lock()
	raw := strings.Split(strings.TrimSpace(l.buf.String()), "\n")
	l.mu.Unlock()
	if len(raw) == 1 && raw[0] == "" {
		return nil, nil
	}
	out := make([]map[string]any, len(raw))
	for i, s := range raw {
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			t.Fatalf("access log line %q: %v", s, err)
		}
	}
	return raw, out
}

// waitLines waits until the access log holds n lines.
func (l *accessLog) waitLines(t testing.TB, n int) ([]string, []map[string]any) {
	t.Helper()
	var raw []string
	var got []map[string]any
	poll.Eventually(t, 10*time.Second, fmt.Sprintf("%d access log lines", n), func() (bool, string) {
		raw, got = l.lines(t)
		return len(got) >= n, fmt.Sprintf("%d lines: %q", len(got), raw)
	})
	return raw, got
}

// sample is the value of the sample of reg whose name and labels are series
// (as exposed, e.g. `x_total{a="b"}`), "" when there is none.
func sample(t testing.TB, reg *metrics.Registry, series string) string {
	t.Helper()
	var b strings.Builder
	if err := reg.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// waitSample waits until series has value want.
func waitSample(t testing.TB, reg *metrics.Registry, series, want string) {
	t.Helper()
	poll.Eventually(t, 10*time.Second, series+" = "+want, func() (bool, string) {
		got := sample(t, reg, series)
		return got == want, "got " + got
	})
}

// TestObserveHTTP: every request through an http-mode inbound port is
// counted by status class and peer, timed, and logged without its query.
func TestObserveHTTP(t *testing.T) {
	app := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		case "/echo":
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write(body)
		default:
			_, _ = io.WriteString(w, "hello")
		}
	}))
	var log accessLog
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP; c.AccessLog = log.logger() })
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: r.client.Clone()}}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: r.client.Clone(), ForceAttemptHTTP2: true}}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)

	tests := []struct {
		name, method, path, body string
		client                   *http.Client
		wantStatus               int
		wantPath, wantProto      string
		wantIn, wantOut          float64
	}{
		{"ok, query dropped", "GET", "/ok?token=s3cret", "", h1, 200, "/ok", "HTTP/1.1", 0, 5},
		{"encoded question mark stays encoded", "GET", "/a%3Fb?token=s3cret", "", h1, 200, "/a%3Fb", "HTTP/1.1", 0, 5},
		{"not found over h2", "GET", "/missing", "", h2, 404, "/missing", "HTTP/2.0", 0, 19},
		{"server error", "GET", "/fail", "", h1, 500, "/fail", "HTTP/1.1", 0, 0},
		{"body both ways", "POST", "/echo", "abcd", h1, 201, "/echo", "HTTP/1.1", 4, 4},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "https://"+r.addr+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "server.demo.svc"
			res, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			raw, lines := log.waitLines(t, i+1)
			line := lines[i]
			if strings.Contains(raw[i], "s3cret") || strings.Contains(raw[i], "token") {
				t.Fatalf("access log line holds the query string: %s", raw[i])
			}
			want := map[string]any{
				"msg": "request", "direction": "inbound", "method": tt.method, "authority": "server.demo.svc",
				"path": tt.wantPath, "protocol": tt.wantProto, "status": float64(tt.wantStatus),
				"bytes_in": tt.wantIn, "bytes_out": tt.wantOut, "peer": clientID, "upstream": app,
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("access log %s = %v, want %v (line %s)", k, line[k], v, raw[i])
				}
			}
			for _, k := range []string{"time", "duration_ms"} {
				if _, ok := line[k]; !ok {
					t.Errorf("access log line has no %s: %s", k, raw[i])
				}
			}
			if _, ok := line["grpc_status"]; ok {
				t.Errorf("grpc_status on a plain HTTP answer: %s", raw[i])
			}
		})
	}

	labels := func(class string) string {
		return fmt.Sprintf(`podtls_sidecar_http_requests_total{direction="inbound",upstream=%q,peer=%q,code_class=%q}`, app, clientID, class)
	}
	for class, want := range map[string]string{"2xx": "3", "4xx": "1", "5xx": "1"} {
		if got := sample(t, r.reg, labels(class)); got != want {
			t.Errorf("%s = %q, want %s", labels(class), got, want)
		}
	}
	count := fmt.Sprintf(`podtls_sidecar_http_request_duration_seconds_count{direction="inbound",upstream=%q}`, app)
	if got := sample(t, r.reg, count); got != "5" {
		t.Errorf("%s = %q, want 5", count, got)
	}
	inf := fmt.Sprintf(`podtls_sidecar_http_request_duration_seconds_bucket{direction="inbound",upstream=%q,le="+Inf"}`, app)
	if got := sample(t, r.reg, inf); got != "5" {
		t.Errorf("%s = %q, want 5", inf, got)
	}
	if got := sample(t, r.reg, `podtls_sidecar_http_requests_in_flight{direction="inbound"}`); got != "0" {
		t.Errorf("in flight after every answer = %q, want 0", got)
	}
}

// TestObserveWebSocket: an Upgrade still works through the middleware and is
// counted, with status 101, as soon as it is switched, while it stays open.
func TestObserveWebSocket(t *testing.T) {
	app, _ := wsEchoApp(t)
	var log accessLog
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP; c.AccessLog = log.logger() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.wsDial(ctx, t)
	if err != nil {
		t.Fatalf("websocket dial through the proxy: %v", err)
	}
	defer c.CloseNow()
	series := fmt.Sprintf(`podtls_sidecar_http_requests_total{direction="inbound",upstream=%q,peer=%q,code_class="1xx"}`, app, clientID)
	waitSample(t, r.reg, series, "1")
	waitSample(t, r.reg, `podtls_sidecar_http_requests_in_flight{direction="inbound"}`, "0")
	// Counted, and still open both ways.
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "echo:hi" {
		t.Fatalf("read after the upgrade was counted = %q, %v", got, err)
	}
	raw, lines := log.waitLines(t, 1)
	if lines[0]["status"] != float64(http.StatusSwitchingProtocols) || lines[0]["path"] != "/ws" {
		t.Fatalf("access log line %s, want status 101 for /ws", raw[0])
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "the connection to be uncounted", func() (bool, string) {
		return r.p.Open() == 0, fmt.Sprintf("%d open", r.p.Open())
	})
	if got := sample(t, r.reg, series); got != "1" {
		t.Fatalf("%s = %s after the WebSocket closed, want 1: counted once", series, got)
	}
}

// TestObserveGRPC: gRPC answers are counted by grpc-status, whether it came
// in trailers or as a trailers-only answer, and trailers still reach the
// client.
func TestObserveGRPC(t *testing.T) {
	addr, _ := newGRPCApp(t)
	var log accessLog
	r := newRig(t, addr, func(c *Config) {
		c.Mode = ModeHTTP
		c.Inbound[0].Protocol = ProtoH2C
		c.AccessLog = log.logger()
	})
	client := r.grpcClient(t)
	for i, code := range []codes.Code{codes.OK, codes.NotFound, codes.OK} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var trailer metadata.MD
		req := &testgrpc.SimpleRequest{Payload: payload("x")}
		if code != codes.OK {
			req.ResponseStatus = &testgrpc.EchoStatus{Code: int32(code), Message: "no"}
		}
		_, err := client.UnaryCall(ctx, req, grpc.Trailer(&trailer))
		cancel()
		if status.Code(err) != code {
			t.Fatalf("call %d: %v, want %v", i, err, code)
		}
		if got := trailer.Get("app-trailer"); len(got) != 1 || got[0] != "t-x" {
			t.Fatalf("call %d: trailer app-trailer = %q, want t-x", i, got)
		}
	}
	for name, want := range map[string]string{"OK": "2", "NotFound": "1"} {
		waitSample(t, r.reg, fmt.Sprintf(`podtls_sidecar_grpc_responses_total{direction="inbound",upstream=%q,grpc_code=%q}`, addr, name), want)
	}
	raw, lines := log.waitLines(t, 3)
	if lines[1]["grpc_status"] != "5" || lines[1]["protocol"] != "HTTP/2.0" || lines[1]["path"] != "/grpc.testing.TestService/UnaryCall" {
		t.Fatalf("access log line of the NotFound call: %s", raw[1])
	}
}

// TestObserveOutbound uses the middleware as an outbound handler would: the
// handler reports the upstream's identity with notePeer, and the writer
// keeps Flusher, Hijacker and the ResponseController features.
func TestObserveOutbound(t *testing.T) {
	const upstream, upID = "up.demo.svc:8443", "spiffe://cluster.local/ns/demo/sa/up"
	reg := metrics.NewRegistry()
	p, err := New(Config{
		Outbound:  []Outbound{{Listen: "127.0.0.1:0", Upstream: upstream}},
		ClientTLS: func(Outbound) *tls.Config { return &tls.Config{} },
		Mode:      ModeHTTP, Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	handlerErr := make(chan error, 1)
	addr := serveHTTP(t, p.observe(dirOutbound, upstream, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, flusher := w.(http.Flusher)
		_, hijacker := w.(http.Hijacker)
		rc := http.NewResponseController(w)
		var err error
		switch {
		case !flusher || !hijacker:
			err = fmt.Errorf("writer %T: Flusher %v, Hijacker %v", w, flusher, hijacker)
		default:
			err = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		}
		handlerErr <- err
		notePeer(r.Context(), upID)
		w.WriteHeader(http.StatusAccepted)
		_ = rc.Flush()
	})))
	res, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if err := <-handlerErr; err != nil {
		t.Fatalf("through the middleware: %v", err)
	}
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202", res.StatusCode)
	}
	waitSample(t, reg, fmt.Sprintf(`podtls_sidecar_http_requests_total{direction="outbound",upstream=%q,peer=%q,code_class="2xx"}`, upstream, upID), "1")
}

func TestPeerLabels(t *testing.T) {
	tests := []struct {
		name string
		ids  []string
		want []string
	}{
		{"no peer", []string{"", ""}, []string{"", ""}},
		{"under the cap", []string{"spiffe://td/a", "spiffe://td/b", "spiffe://td/a"}, []string{"spiffe://td/a", "spiffe://td/b", "spiffe://td/a"}},
		{"beyond the cap", []string{"spiffe://td/a", "spiffe://td/b", "spiffe://td/c", "spiffe://td/b", "spiffe://td/d"},
			[]string{"spiffe://td/a", "spiffe://td/b", otherPeer, "spiffe://td/b", otherPeer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := peerLabels{max: 2}
			for i, id := range tt.ids {
				if got := s.label(id); got != tt.want[i] {
					t.Fatalf("label(%q) #%d = %q, want %q", id, i, got, tt.want[i])
				}
			}
		})
	}
}

// TestPeerCapEndToEnd: past maxPeerLabels identities, a new client is
// counted as "other".
func TestPeerCapEndToEnd(t *testing.T) {
	app := serveHTTP(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP })
	for i := range maxPeerLabels {
		r.p.obs.peers.label(fmt.Sprintf("spiffe://cluster.local/ns/demo/sa/seen-%d", i))
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.client.Clone()}}
	t.Cleanup(hc.CloseIdleConnections)
	res, err := hc.Get("https://" + r.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	waitSample(t, r.reg, fmt.Sprintf(`podtls_sidecar_http_requests_total{direction="inbound",upstream=%q,peer="other",code_class="2xx"}`, app), "1")
}

func TestCodeLabels(t *testing.T) {
	for _, tt := range []struct {
		status int
		want   string
	}{{0, classCanceled}, {101, "1xx"}, {200, "2xx"}, {308, "3xx"}, {499, "4xx"}, {503, "5xx"}, {99, classOther}, {600, classOther}} {
		if got := codeClass(tt.status); got != tt.want {
			t.Errorf("codeClass(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"0", "OK"}, {"5", "NotFound"}, {"16", "Unauthenticated"}, {"17", "Unknown"}, {"-1", "Unknown"}, {"x", "Unknown"},
	} {
		if got := grpcCodeName(tt.in); got != tt.want {
			t.Errorf("grpcCodeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// BenchmarkObserve measures the middleware's cost per request, access log
// off, around a handler that answers at once.
func BenchmarkObserve(b *testing.B) {
	p, err := New(Config{Inbound: []Inbound{{Listen: "127.0.0.1:0", Target: "127.0.0.1:1"}},
		ServerTLS: func([]string) *tls.Config { return &tls.Config{} }, Mode: ModeHTTP})
	if err != nil {
		b.Fatal(err)
	}
	h := p.observe(dirInbound, "127.0.0.1:1", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	req, err := http.NewRequest(http.MethodGet, "/x", nil)
	if err != nil {
		b.Fatal(err)
	}
	w := discardWriter{http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header       { return w.h }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
