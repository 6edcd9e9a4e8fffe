package admin

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/sidecar/exposure"
	"github.com/podtls/podtls/sidecar/metrics"
)

type fakeStore struct {
	ready bool
	snap  certs.Snapshot
}

func (f *fakeStore) Ready() bool              { return f.ready }
func (f *fakeStore) Snapshot() certs.Snapshot { return f.snap }

func TestEndpoints(t *testing.T) {
	st := &fakeStore{}
	reg := metrics.NewRegistry()
	reg.NewCounterVec("podtls_sidecar_x_total", "x", "a").With("b").Inc()
	listening := false
	srv := httptest.NewServer(Handler(st, reg, func() bool { return listening }, nil))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		name         string
		ready, lis   bool
		path         string
		code         int
		bodyContains string
	}{
		{"healthz", false, false, "/healthz", 200, "ok"},
		{"not-ready-no-cert", false, true, "/readyz", 503, "certificate"},
		{"not-ready-listeners", true, false, "/readyz", 503, "listeners"},
		{"ready", true, true, "/readyz", 200, "ok"},
		{"metrics", true, true, "/metrics", 200, `podtls_sidecar_x_total{a="b"} 1`},
		{"unknown", true, true, "/debug/pprof/", 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st.ready, listening = tc.ready, tc.lis
			code, body := get(tc.path)
			if code != tc.code || !strings.Contains(body, tc.bodyContains) {
				t.Fatalf("%s: %d %q", tc.path, code, body)
			}
		})
	}
	st.snap = certs.Snapshot{Ready: true, Mesh: &certs.CertInfo{Name: "mesh", Serial: "ab", NotAfter: time.Unix(0, 0).UTC()}}
	_, body := get("/certs")
	var snap certs.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil || snap.Mesh == nil || snap.Mesh.Serial != "ab" {
		t.Fatalf("/certs: %v %s", err, body)
	}
	if strings.Contains(strings.ToLower(body), "private") {
		t.Fatal("/certs mentions private material")
	}
}

func TestRenew(t *testing.T) {
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0xbeef), NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	ok := func(context.Context) (*x509.Certificate, error) { return leaf, nil }
	fail := func(context.Context) (*x509.Certificate, error) { return nil, errors.New("CA answered 503") }
	cases := []struct {
		name   string
		method string
		remote string
		renew  Renewer
		code   int
		body   string
	}{
		{"get", http.MethodGet, "127.0.0.1:5000", ok, http.StatusMethodNotAllowed, "POST"},
		{"put", http.MethodPut, "127.0.0.1:5000", ok, http.StatusMethodNotAllowed, "POST"},
		{"pod-network", http.MethodPost, "10.244.0.7:40000", ok, http.StatusForbidden, "loopback"},
		{"node", http.MethodPost, "10.250.0.2:40000", ok, http.StatusForbidden, "loopback"},
		{"garbage-remote", http.MethodPost, "not-an-address", ok, http.StatusForbidden, "loopback"},
		{"file-mode", http.MethodPost, "127.0.0.1:5000", nil, http.StatusConflict, "--ca-url"},
		{"ca-fails", http.MethodPost, "127.0.0.1:5000", fail, http.StatusBadGateway, "CA answered 503"},
		{"ipv4", http.MethodPost, "127.0.0.1:5000", ok, http.StatusOK, `"serial":"beef"`},
		{"ipv6", http.MethodPost, "[::1]:5000", ok, http.StatusOK, `"not_after":"2030-01-02T03:04:05Z"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts []Option
			called := false
			if tc.renew != nil {
				r := tc.renew
				opts = append(opts, WithRenewer(func(ctx context.Context) (*x509.Certificate, error) {
					called = true
					return r(ctx)
				}))
			}
			h := Handler(&fakeStore{ready: true}, metrics.NewRegistry(), nil, nil, opts...)
			req := httptest.NewRequest(tc.method, "/renew", nil)
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("%s /renew from %s: %d %q, want %d containing %q", tc.method, tc.remote, rec.Code, rec.Body.String(), tc.code, tc.body)
			}
			if refused := tc.code == http.StatusMethodNotAllowed || tc.code == http.StatusForbidden; refused && called {
				t.Fatal("renewer called for a refused request")
			}
		})
	}
}

// TestRenewInterval: after a successful forced renewal the next one is refused
// with 429 and Retry-After until the interval has passed; a failed one does not
// start the interval.
func TestRenewInterval(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fail := true
	calls := 0
	h := Handler(&fakeStore{ready: true}, metrics.NewRegistry(), nil, nil,
		WithRenewer(func(context.Context) (*x509.Certificate, error) {
			calls++
			if fail {
				return nil, errors.New("CA down")
			}
			return &x509.Certificate{SerialNumber: big.NewInt(int64(calls))}, nil
		}),
		WithRenewInterval(10*time.Second, func() time.Time { return now }))
	post := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/renew", nil)
		req.RemoteAddr = "127.0.0.1:4000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	steps := []struct {
		name    string
		fail    bool
		advance time.Duration
		code    int
		retry   string
	}{
		{"failure", true, 0, http.StatusBadGateway, ""},
		{"failure does not throttle", false, 0, http.StatusOK, ""},
		{"too soon", false, 3 * time.Second, http.StatusTooManyRequests, "8"},
		{"still too soon", false, 6 * time.Second, http.StatusTooManyRequests, "2"},
		{"interval passed", false, time.Second, http.StatusOK, ""},
	}
	wantCalls := 0
	for _, st := range steps {
		fail = st.fail
		now = now.Add(st.advance)
		rec := post()
		if st.code != http.StatusTooManyRequests {
			wantCalls++
		}
		if rec.Code != st.code || rec.Header().Get("Retry-After") != st.retry || calls != wantCalls {
			t.Fatalf("%s: %d Retry-After %q, %d renewer calls; want %d %q %d: %s",
				st.name, rec.Code, rec.Header().Get("Retry-After"), calls, st.code, st.retry, wantCalls, rec.Body.String())
		}
	}
}

// TestPlaintext: /plaintext answers the last check as JSON, and exists only
// when the check is wired in.
func TestPlaintext(t *testing.T) {
	rep := exposure.Report{Enabled: true, PodIPs: []string{"10.1.2.3"}, CheckedAt: time.Unix(100, 0).UTC(),
		Ports: []exposure.Port{{Port: 8080, Exposed: true, Addresses: []string{"10.1.2.3:8080"}, Fix: exposure.Fix(8080)}}}
	for _, tc := range []struct {
		name string
		opts []Option
		code int
	}{
		{"wired", []Option{WithPlaintext(func() exposure.Report { return rep })}, 200},
		{"not wired", nil, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(&fakeStore{}, metrics.NewRegistry(), nil, nil, tc.opts...))
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/plaintext")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.code != 200 {
				return
			}
			var got exposure.Report
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if len(got.Exposed()) != 1 || got.Exposed()[0].Fix == "" || !got.CheckedAt.Equal(rep.CheckedAt) {
				t.Fatalf("decoded %+v", got)
			}
		})
	}
}
