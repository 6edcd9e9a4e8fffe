package discover

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/sidecar/metrics"
)

func TestAddresses(t *testing.T) {
	tests := []struct {
		name string
		eps  []discoveryapi.Endpoint
		want []string
	}{
		{"ready only", []discoveryapi.Endpoint{
			{Address: "10.0.0.1", Port: 8443, Ready: true, Serving: true},
			{Address: "10.0.0.2", Port: 8443, Serving: true, Terminating: true},
			{Address: "fd00::3", Port: 8443, Ready: true, Serving: true},
		}, []string{"10.0.0.1:8443", "[fd00::3]:8443"}},
		{"none ready: the serving ones", []discoveryapi.Endpoint{
			{Address: "10.0.0.2", Port: 8443, Serving: true, Terminating: true},
			{Address: "10.0.0.4", Port: 8443},
		}, []string{"10.0.0.2:8443"}},
		{"none at all: known and empty", nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Addresses(&discoveryapi.Endpoints{Endpoints: tt.eps})
			if !slices.Equal(got, tt.want) || got == nil {
				t.Fatalf("Addresses = %#v, want %#v", got, tt.want)
			}
		})
	}
}

// controller plays the discovery API: a script of answers, one per request.
type controller struct {
	mu      sync.Mutex
	answers []func(w http.ResponseWriter, r *http.Request)
	queries []string
}

func (c *controller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.queries = append(c.queries, r.URL.RawQuery)
	var a func(http.ResponseWriter, *http.Request)
	if len(c.answers) > 0 {
		a, c.answers = c.answers[0], c.answers[1:]
	}
	c.mu.Unlock()
	if a == nil {
		<-r.Context().Done() // a long poll with no change
		return
	}
	a(w, r)
}

func endpoints(version string, addrs ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		eps := discoveryapi.Endpoints{Version: version, Service: "server.demo.svc", Port: 8443, Endpoints: []discoveryapi.Endpoint{}}
		for _, a := range addrs {
			eps.Endpoints = append(eps.Endpoints, discoveryapi.Endpoint{Address: a, Port: 8443, Ready: true, Serving: true})
		}
		_ = json.NewEncoder(w).Encode(eps)
	}
}

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(discoveryapi.Error{Error: http.StatusText(code)})
	}
}

func TestWatch(t *testing.T) {
	ctl := &controller{answers: []func(http.ResponseWriter, *http.Request){
		endpoints("v1", "10.0.0.1", "10.0.0.2"),
		endpoints("v1", "10.0.0.1", "10.0.0.2"), // the long poll ran out: no update
		status(http.StatusServiceUnavailable),   // the controller away: keep v1
		status(http.StatusUnauthorized),         // still away
		endpoints("v2", "10.0.0.2"),             // back, with a change
		status(http.StatusNotFound),             // the Service is gone: dial by name
		endpoints("v3", "10.0.0.3"),             // and back
	}}
	srv := httptest.NewServer(ctl)
	defer srv.Close()
	reg := metrics.NewRegistry()
	c := &Client{BaseURL: srv.URL, HTTP: srv.Client(), Wait: 5 * time.Second,
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, NotFoundRetry: time.Millisecond, Registry: reg}
	c.Init()
	updates := make(chan []string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Watch(ctx, "server.demo.svc:8443", func(a []string) { updates <- a })
		close(done)
	}()
	for _, want := range [][]string{
		{"10.0.0.1:8443", "10.0.0.2:8443"},
		{"10.0.0.2:8443"},
		nil,
		{"10.0.0.3:8443"},
	} {
		select {
		case got := <-updates:
			if !slices.Equal(got, want) || (got == nil) != (want == nil) {
				t.Fatalf("update %#v, want %#v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no update; want %v", want)
		}
	}
	cancel()
	<-done
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if q := ctl.queries[0]; !strings.Contains(q, "host=server.demo.svc") || !strings.Contains(q, "port=8443") || strings.Contains(q, "wait=") {
		t.Errorf("first query %q: want host and port, no wait", q)
	}
	if q := ctl.queries[1]; !strings.Contains(q, "version=v1") || !strings.Contains(q, "wait=5s") {
		t.Errorf("second query %q: want a long poll on v1", q)
	}
	var b strings.Builder
	_ = reg.WriteText(&b)
	for _, want := range []string{
		`podtls_sidecar_discovery_endpoints{upstream="server.demo.svc:8443"} 1`,
		`podtls_sidecar_discovery_errors_total{upstream="server.demo.svc:8443",reason="unauthorized"} 1`,
		`podtls_sidecar_discovery_errors_total{upstream="server.demo.svc:8443",reason="not_found"} 1`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
}
