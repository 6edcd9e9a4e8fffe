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

	// A short wait: with a native sidecar the check starts only once the sidecar is ready,
	// so it succeeds at once or not at all.
	in := mesh.Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever,
		Replicas: 2, RepoRoot: root, Values: map[string]any{"tests": map[string]any{"timeout": "15s"}}}
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
	// Ready replicas are not yet reachable through the Service everywhere (kube-proxy
	// catches up), and pods that opt in by annotation are admitted without the sidecar
	// while the webhook is unreachable (failurePolicy Ignore): wait until a dry-run
	// creation is injected, as a user would wait for `rollout status`.
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default",
			Annotations: map[string]string{"podtls.io/inject": "true", "podtls.io/inbound": "8443:8080"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: sidecarImage}}},
	}
	for {
		p, err := cs.CoreV1().Pods("default").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && len(p.Spec.InitContainers) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dry-run pods still not injected 3m after the install (err %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("webhook injecting %s after the install", time.Since(t0).Round(time.Millisecond))

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

	// The test can fail: with the controller down, the opt-in webhook (failurePolicy
	// Ignore) lets the pod in without a sidecar, and nothing answers on its admin port.
	if _, err := c.RunKubectl(ctx, "-n", "podtls-system", "scale", "deployment", "podtls-controller", "--replicas=0"); err != nil {
		t.Fatal(err)
	}
	for {
		pods, err := cs.CoreV1().Pods("podtls-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("controller pods not gone after scaling to 0")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t0 = time.Now()
	out, err = in.Test(ctx, cs)
	if err == nil {
		t.Fatalf("helm test passed for a pod that cannot be injected:\n%s", out)
	}
	t.Logf("helm test failed as it must without injection, in %s: %v", time.Since(t0).Round(time.Millisecond), err)
	pod, err := cs.CoreV1().Pods("default").Get(ctx, "podtls-controller-test-injection", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("a failed test pod is kept for inspection: %v", err)
	}
	if len(pod.Spec.InitContainers) > 0 {
		t.Errorf("test pod in a disabled namespace was injected: %v", pod.Spec.InitContainers[0].Name)
	}
}
