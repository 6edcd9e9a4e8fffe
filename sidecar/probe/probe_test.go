package probe

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/tlsconfig"
)

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(t, ln.Addr().String())
	ln.Close()
	return p
}

// TestProber runs every kind of probe against real loopback servers and checks the
// kubelet gets the app's answer.
func TestProber(t *testing.T) {
	block := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			if r.Header.Get("X-Probe") != "liveness" || !strings.HasPrefix(r.UserAgent(), "kube-probe/") {
				http.Error(w, "headers not passed on", http.StatusBadRequest)
				return
			}
			_, _ = io.WriteString(w, "alive")
		case "/readyz":
			http.Error(w, "not ready: warming up", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/query":
			_, _ = io.WriteString(w, r.URL.RawQuery)
		case "/slow":
			<-block
		}
	}))
	defer app.Close()
	defer close(block) // before app.Close: it waits for the blocked handler
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "tls ok")
	}))
	defer tlsApp.Close()

	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("podinfo", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("draining", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(grpcLn) }()
	defer gs.Stop()

	httpPort, tlsPort, grpcPort, dead := port(t, app.Listener.Addr().String()), port(t, tlsApp.Listener.Addr().String()),
		port(t, grpcLn.Addr().String()), closedPort(t)
	get := func(path string) *contract.HTTPGetProbe {
		return &contract.HTTPGetProbe{Port: httpPort, Path: path, Scheme: "HTTP"}
	}
	for _, tt := range []struct {
		name     string
		probe    contract.AppProbe
		wantCode int
		wantBody string
	}{
		{"http ok with headers", contract.AppProbe{HTTPGet: &contract.HTTPGetProbe{Port: httpPort, Path: "/healthz",
			Headers: []contract.HTTPHeader{{Name: "X-Probe", Value: "liveness"}}}}, 200, "alive"},
		{"http failure passed on", contract.AppProbe{HTTPGet: get("/readyz")}, 503, "not ready: warming up"},
		{"redirect is the answer", contract.AppProbe{HTTPGet: get("/moved")}, 302, ""},
		{"query kept", contract.AppProbe{HTTPGet: get("/query?verbose=1")}, 200, "verbose=1"},
		{"https, certificate not verified", contract.AppProbe{HTTPGet: &contract.HTTPGetProbe{Port: tlsPort, Path: "/", Scheme: "HTTPS"}}, 200, "tls ok"},
		{"http refused", contract.AppProbe{HTTPGet: &contract.HTTPGetProbe{Port: dead, Path: "/"}}, 503, "connection refused"},
		{"http timeout", contract.AppProbe{HTTPGet: get("/slow"), TimeoutSeconds: 1}, 503, "deadline exceeded"},
		{"tcp open", contract.AppProbe{TCPSocket: &contract.PortProbe{Port: httpPort}}, 200, "accepts connections"},
		{"tcp closed", contract.AppProbe{TCPSocket: &contract.PortProbe{Port: dead}}, 503, "connection refused"},
		{"grpc serving", contract.AppProbe{GRPC: &contract.GRPCProbe{Port: grpcPort, Service: "podinfo"}}, 200, "SERVING"},
		{"grpc not serving", contract.AppProbe{GRPC: &contract.GRPCProbe{Port: grpcPort, Service: "draining"}}, 503, "NOT_SERVING"},
		{"grpc unknown service", contract.AppProbe{GRPC: &contract.GRPCProbe{Port: grpcPort, Service: "nope"}}, 503, "NotFound"},
		{"grpc refused", contract.AppProbe{GRPC: &contract.GRPCProbe{Port: dead}}, 503, "grpc probe"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := contract.AppHealthPath("app", contract.ProbeReadiness)
			p := New(contract.AppProbesConfig{path: tt.probe}, "127.0.0.1", tlsconfig.ProbeClient(tlsconfig.Options{}), slog.New(slog.DiscardHandler))
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, path, nil))
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestProberUnknownPath(t *testing.T) {
	p := New(nil, "127.0.0.1", nil, nil)
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/app-health/app/livez", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown probe path: %d, want 404", rec.Code)
	}
}
