package demo

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/acmetest"
)

// TestDemo runs exactly what `make demo` runs and checks what it showed. Like the
// other node suites it needs root and the node binaries:
//
//	PODTLS_REQUIRE_NODE=1 go test -count=1 -v -timeout 20m ./e2e/demo/
func TestDemo(t *testing.T) {
	cluster.Require(t, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var out strings.Builder
	// The public edge runs when BIND9 and Pebble are installed; PODTLS_REQUIRE_ACME=1
	// (CI) makes their absence a failure.
	mode := ACMEAuto
	if os.Getenv(acmetest.RequireEnv) != "" {
		mode = ACMERequired
	}
	res, err := Run(ctx, Options{Logger: log, ACME: mode}, &out)
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{
		"customer        <- spiffe://cluster.local/ns/demo/sa/visitor",
		"preference      <- spiffe://cluster.local/ns/demo/sa/customer",
		"recommendation  <- spiffe://cluster.local/ns/demo/sa/preference",
	} {
		if !strings.Contains(res.Trace, want) {
			t.Errorf("trace lacks %q:\n%s", want, res.Trace)
		}
	}
	if res.ACME {
		// The public call went through all three services, starting at the edge
		// with no client identity.
		for _, want := range []string{
			"customer        <- public client (TLS for " + PublicHost,
			"preference      <- spiffe://cluster.local/ns/demo/sa/customer",
			"recommendation  <- spiffe://cluster.local/ns/demo/sa/preference",
		} {
			if !strings.Contains(res.EdgeTrace, want) {
				t.Errorf("curl https://%s/ lacks %q:\n%s", PublicHost, want, res.EdgeTrace)
			}
		}
		if !res.EdgeRotation.Rotated() {
			t.Errorf("ACME certificate not rotated: %+v", res.EdgeRotation)
		}
		// podtls published the name itself (no hand-made record), at the node.
		if f := strings.Fields(res.Record); len(f) != 5 || f[0] != PublicHost+"." || f[3] != "A" || f[4] != cluster.NodeIP {
			t.Errorf("dig %s A on BIND: %q, want the node's address %s", PublicHost, res.Record, cluster.NodeIP)
		}
	} else {
		t.Log("the public edge did not run: BIND9 and Pebble are not installed (hack/acme-deps.sh)")
	}
	if res.IntruderPhase == corev1.PodSucceeded || res.IntruderError == "" || res.Refusals < 1 || res.IntruderReachedApp {
		t.Errorf("intruder: pod %s, error %q, %v refusals, reached the app %v; want a failed call, at least one identity_not_allowed and nothing at the app",
			res.IntruderPhase, res.IntruderError, res.Refusals, res.IntruderReachedApp)
	}
	if !res.MeshRotation.Rotated() {
		t.Errorf("mesh certificate not rotated: %+v", res.MeshRotation)
	}
	// The podtls command agrees with what the run showed: every pod's identity
	// and the rotated serials, and a green installation.
	wants := []string{"spiffe://cluster.local/ns/demo/sa/customer", res.MeshRotation.After}
	if res.ACME {
		wants = append(wants, PublicHost, res.EdgeRotation.After)
	}
	for _, want := range wants {
		if !strings.Contains(res.Status, want) {
			t.Errorf("podtls status lacks %q:\n%s", want, res.Status)
		}
	}
	if res.CheckExit != 0 {
		t.Errorf("podtls check exited %d on the demo cluster:\n%s", res.CheckExit, res.CheckOutput)
	}
	if len(res.Restarts) != len(apps) {
		t.Errorf("restart counts of %d pods, want %d: %v", len(res.Restarts), len(apps), res.Restarts)
	}
	for pod, n := range res.Restarts {
		if n != 0 {
			t.Errorf("pod %s restarted %d times", pod, n)
		}
	}
	if res.PodsReplaced {
		t.Error("a demo pod was replaced during the run")
	}
	var timings []string
	for _, tm := range res.Timings {
		timings = append(timings, tm.Step+"="+tm.Took.Round(100*time.Millisecond).String())
	}
	t.Logf("TIMINGS total=%s %s", res.Total.Round(100*time.Millisecond), strings.Join(timings, " "))
}
