package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/testpki"
)

// policyRig is balancedRig with a request timeout and retries on the
// upstream.
func policyRig(t *testing.T, ca *testpki.CA, d *staticDiscovery, timeout time.Duration, retries int) *outRig {
	return newOutRig(t, ca, upstreamName+":8443", func(c *Config) {
		c.Outbound[0].Protocol = OutHTTP
		c.Outbound[0].Timeout = timeout
		c.Outbound[0].Retries = retries
		c.Discovery = d
		c.Balance.Floor = time.Minute
	})
}

// appAt starts an app behind a mesh sidecar with handler h.
func appAt(t *testing.T, ca *testpki.CA, h http.HandlerFunc) string {
	return meshServer(t, ca, serveHTTP(t, h), "")
}

// TestBalancedTimeout: a request whose response headers do not come within
// the upstream's timeout is answered 504 response_timeout; a response whose
// headers come in time streams on past the timeout.
func TestBalancedTimeout(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	app := appAt(t, ca, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stuck" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for i := range 3 {
			time.Sleep(150 * time.Millisecond) // the body outlives the 200 ms timeout
			fmt.Fprintf(w, "part%d ", i)
			w.(http.Flusher).Flush()
		}
	})
	r := policyRig(t, ca, &staticDiscovery{addrs: []string{app}}, 200*time.Millisecond, 0)
	for _, client := range []*http.Client{h2cClient(), {Timeout: 10 * time.Second}} {
		res, err := client.Get("http://" + r.addr + "/stuck")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusGatewayTimeout || res.Header.Get(ErrorHeader) != "response_timeout" {
			t.Fatalf("stuck request: %s %s=%q, want 504 response_timeout", res.Status, ErrorHeader, res.Header.Get(ErrorHeader))
		}
		res, err = client.Get("http://" + r.addr + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || string(body) != "part0 part1 part2 " {
			t.Fatalf("streamed response: %s %q %v, want the whole body", res.Status, body, err)
		}
	}
	if m, want := r.metrics(t), `podtls_sidecar_outbound_failures_total{upstream="server.demo.svc:8443",reason="response_timeout"} 2`; !strings.Contains(m, want) {
		t.Fatalf("metrics lack %s:\n%s", want, m)
	}
}

// TestBalancedRetries: with retries, an idempotent request without a body
// that one endpoint answers 503 (or drops) is sent to the other; a POST, or
// an upstream without retries, gets the endpoint's own answer.
func TestBalancedRetries(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	var sick, dropped atomic.Int64
	unavailable := appAt(t, ca, func(w http.ResponseWriter, r *http.Request) {
		sick.Add(1)
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	dropper := appAt(t, ca, func(w http.ResponseWriter, r *http.Request) {
		dropped.Add(1)
		panic(http.ErrAbortHandler) // the app's connection is cut mid-request
	})
	healthy := appAt(t, ca, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-App", "healthy")
	})
	count := func(r *outRig, method string, n int) map[int]int {
		t.Helper()
		codes := map[int]int{}
		client := h2cClient()
		for i := range n {
			req, _ := http.NewRequest(method, "http://"+r.addr+"/x", nil)
			if method == http.MethodPost {
				req.Body = io.NopCloser(strings.NewReader("payload"))
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %d: %v", method, i, err)
			}
			res.Body.Close()
			codes[res.StatusCode]++
		}
		return codes
	}

	for _, bad := range []string{unavailable, dropper} {
		with := policyRig(t, ca, &staticDiscovery{addrs: []string{bad, healthy}}, 0, 2)
		if got := count(with, http.MethodGet, 40); got[http.StatusOK] != 40 {
			t.Errorf("GET with retries=2 next to a bad endpoint: %v, want all 200", got)
		}
		if got := count(with, http.MethodPost, 40); got[http.StatusOK] == 40 {
			t.Errorf("POST with retries=2: %v, want some failures (never retried)", got)
		}
		without := policyRig(t, ca, &staticDiscovery{addrs: []string{bad, healthy}}, 0, 0)
		if got := count(without, http.MethodGet, 40); got[http.StatusOK] == 40 {
			t.Errorf("GET without retries: %v, want some failures", got)
		}
	}
	if sick.Load() == 0 || dropped.Load() == 0 {
		t.Fatalf("the bad endpoints saw %d and %d requests", sick.Load(), dropped.Load())
	}
}
