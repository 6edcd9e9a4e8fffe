package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/sidecar/certs"
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
