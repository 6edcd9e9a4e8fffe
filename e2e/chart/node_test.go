package chart

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/e2e/mesh"
)

// TestHelmTestOnNode installs the chart with its production defaults (two replicas,
// PodDisruptionBudget, anti-affinity) on the real single-node cluster and runs `helm test`:
// the test pod must be injected and its sidecar certified by the CA. A node suite: it runs
// with PODTLS_E2E_NODE=1 or PODTLS_REQUIRE_NODE=1 (see e2e/cluster.Require).
func TestHelmTestOnNode(t *testing.T) {
	cluster.Require(t, "chart")
	helmBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root := repoRoot(t)
	const (
		controllerImage = "localhost/podtls/controller:chart-e2e"
		sidecarImage    = "localhost/podtls/sidecar:chart-e2e"
	)
	dir := t.TempDir()
	var images []string
	for _, img := range []struct{ pkg, name string }{
		{"./webhook/cmd/podtls-controller", controllerImage},
		{"./sidecar/cmd/podtls-sidecar", sidecarImage},
	} {
		out := filepath.Join(dir, filepath.Base(img.pkg)+".tar")
		if err := cluster.BuildImage(ctx, root, img.pkg, img.name, out); err != nil {
			t.Fatal(err)
		}
		images = append(images, out)
	}
	c, err := cluster.Up(ctx, cluster.Options{RepoRoot: root, Images: images, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Down(); err != nil {
			t.Errorf("Down: %v", err)
		}
	})
	cs := c.Client

	in := mesh.Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever,
		Replicas: 2, RepoRoot: root}
	t0 := time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		d, err := cs.AppsV1().Deployments("podtls-system").Get(ctx, "podtls-controller", metav1.GetOptions{})
		if err == nil && d.Status.AvailableReplicas == 2 {
			break
		}
		if time.Now().After(deadline) {
			out, _ := c.RunKubectl(ctx, "-n", "podtls-system", "describe", "pods")
			t.Fatalf("controller not available after 3m (err %v):\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("helm install -> 2 replicas available in %s", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	out, err := in.Test(ctx, cs)
	if err != nil {
		desc, _ := c.RunKubectl(ctx, "-n", "default", "describe", "pod", "podtls-controller-test-injection")
		logs, _ := c.RunKubectl(ctx, "-n", "default", "logs", "podtls-controller-test-injection", "--all-containers")
		t.Fatalf("helm test: %v\n%s\n%s", err, desc, logs)
	}
	if !regexp.MustCompile(`Phase:\s+Succeeded`).Match(out) {
		t.Errorf("helm test output does not report success:\n%s", out)
	}
	t.Logf("helm test passed in %s:\n%s", time.Since(t0).Round(time.Millisecond), out)
}
