package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunWithRealTools runs the whole benchmark once, briefly, with the real
// nginx, wrk, fortio, h2load and podtls-sidecar: every row must answer without errors,
// and everything it started must be gone afterwards.
func TestRunWithRealTools(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx, three sidecars and the load tools for about 45 s")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := findTools(root); err != nil {
		// make test (PODTLS_REQUIRE_ENVTEST) and CI install the tools first and must not pass by skipping.
		if os.Getenv("CI") != "" || os.Getenv("PODTLS_REQUIRE_TOOLS") != "" || os.Getenv("PODTLS_REQUIRE_ENVTEST") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// A private temp dir: the run's files and its lock stay out of the way of a
	// real benchmark running on the machine.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	jsonPath := filepath.Join(tmp, "results.json")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = Run(ctx, Config{
		RepoRoot: root, Duration: time.Second, Rounds: 1, Workers: 4,
		NoPin: true, JSONOutput: jsonPath, Out: &out,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 11 || len(res.Handshakes) != 4 || len(res.Memory) != 4 {
		t.Fatalf("rows/handshakes/memory = %d/%d/%d, want 11/4/4\n%s", len(res.Rows), len(res.Handshakes), len(res.Memory), out.String())
	}
	for _, r := range res.Rows {
		for _, c := range connCounts {
			rs := r.Results[c]
			if r.Err != "" || len(rs) != 1 || rs[0] == nil || rs[0].RPS <= 0 || rs[0].Errors != 0 {
				t.Errorf("row %s c=%d: err %q results %+v", r.Key, c, r.Err, rs)
			}
		}
	}
	for _, h := range res.Handshakes {
		if h.Err != "" || len(h.Results) != 1 || h.Results[0] == nil || h.Results[0].Conns == 0 ||
			h.Results[0].Errors != 0 || h.Results[0].Resumed != 0 {
			t.Errorf("handshakes %s: err %q results %+v", h.Key, h.Err, h.Results)
		}
	}
	for _, m := range res.Memory {
		if m.StartKB <= 0 || m.AfterLoad <= 0 {
			t.Errorf("memory %s: %+v", m.Label, m)
		}
	}
	for _, want := range []string{"targets (benchmarks do not fail the build)", "http mode (--mode http"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q section:\n%s", want, out.String())
		}
	}
	// Cleanup: the temp dir of the run is gone and no server is left.
	left, _ := filepath.Glob(filepath.Join(tmp, "podtls-bench-*"))
	if len(left) != 0 {
		t.Errorf("temp dirs left: %v", left)
	}
	if pids := processesMentioning(t, tmp); len(pids) != 0 {
		t.Errorf("processes left running: %v", pids)
	}
}

// processesMentioning lists PIDs whose command line contains s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
