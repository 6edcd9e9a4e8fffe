package chart

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/e2e/mesh"
)

// TestHelmTestOnNode installs the chart with its production defaults (two replicas,
// PodDisruptionBudget, anti-affinity) on the real single-node cluster and runs `helm test`:
// the test pod must be injected and its sidecar certified by the CA. Then the test must
// fail with the controller down, and pass again after an upgrade to a CA of the user's own
// (ca.existingSecret), which the controller may only read. Last, ACME is turned on and its
// configuration changed without a controller restart. A node suite: it runs with
// PODTLS_E2E_NODE=1 or PODTLS_REQUIRE_NODE=1 (see e2e/cluster.Require).
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
		{"./controller/cmd/podtls-controller", controllerImage},
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
	n := node{t: t, ctx: ctx, c: c, cs: cs, sidecarImage: sidecarImage}

	// A short wait: with a native sidecar the check starts only once the sidecar is ready,
	// so it succeeds at once or not at all.
	in := mesh.Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever,
		Replicas: 2, RepoRoot: root, Values: map[string]any{"tests": map[string]any{"timeout": "15s"}}}
	t0 := time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	n.waitInjecting(t0)
	n.helmTestPasses(in)

	// The test can fail: with the controller down, the opt-in webhook (failurePolicy
	// Ignore) lets the pod in without a sidecar, and nothing answers on its admin port.
	n.scale(0)
	t0 = time.Now()
	out, err := in.Test(ctx, cs)
	if err == nil {
		t.Fatalf("helm test passed for a pod that cannot be injected:\n%s", out)
	}
	t.Logf("helm test failed as it must without injection, in %s: %v", time.Since(t0).Round(time.Millisecond), err)
	pod, err := cs.CoreV1().Pods("default").Get(ctx, "podtls-controller-test-injection", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("a failed test pod is kept for inspection: %v", err)
	}
	if len(pod.Spec.InitContainers) > 0 {
		t.Errorf("test pod admitted without the controller was injected: %v", pod.Spec.InitContainers[0].Name)
	}

	// Bring your own intermediate: the controller signs with it under read-only access to
	// its Secret, publishes the user's root, and the helm test passes again.
	rootPEM, data := corpCA(t)
	if _, err := cs.CoreV1().Secrets("podtls-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "corp-intermediate"}, Data: data,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in.Values["ca"] = map[string]any{"existingSecret": "corp-intermediate"}
	t0 = time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	n.scale(2)
	n.waitInjecting(t0)
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "podtls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Contains(w.ClientConfig.CABundle, bytes.TrimSpace(rootPEM)) {
			t.Errorf("caBundle of %s does not hold the user's root after the upgrade", w.Name)
		}
	}
	n.helmTestPasses(in)
	for _, p := range n.controllerPods() {
		logs, err := cs.CoreV1().Pods("podtls-system").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?i)forbidden`).Match(logs) {
			t.Errorf("controller %s was refused by RBAC with its own CA:\n%s", p.Name, logs)
		}
	}

	// ACME on: the issuer configuration arrives through ConfigMap podtls-acme, and a
	// change to it reaches the running controller without a restart (the directory URLs
	// do not resolve, so each configuration shows up as an error naming its directory).
	acme := func(directory string) map[string]any {
		return map[string]any{
			"directoryURL": directory,
			"dns": map[string]any{
				"provider":             "rfc2136",
				"credentialsSecretRef": map[string]any{"name": "podtls-dns-credentials"},
				"config":               map[string]any{"RFC2136_NAMESERVER": "127.0.0.1:53"},
			},
		}
	}
	in.ACME = acme("https://acme-one.invalid/directory")
	in.ACMECredentials = map[string]string{"RFC2136_TSIG_KEY": "podtls", "RFC2136_TSIG_SECRET": "c2VjcmV0"}
	t0 = time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	n.scale(2)
	n.waitLog("acme-one.invalid", t0)
	before := map[string]bool{}
	for _, p := range n.controllerPods() {
		before[p.Name] = true
	}
	in.ACME = acme("https://acme-two.invalid/directory")
	t0 = time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	n.waitLog("acme-two.invalid", t0)
	for _, p := range n.controllerPods() {
		if !before[p.Name] {
			t.Errorf("controller pod %s is new: the ACME config change restarted the controller", p.Name)
		}
		for _, st := range p.Status.ContainerStatuses {
			if st.RestartCount != 0 {
				t.Errorf("controller %s restarted %d times", p.Name, st.RestartCount)
			}
		}
	}
}

// waitLog waits until a controller pod logs a line containing s.
func (n node) waitLog(s string, since time.Time) {
	n.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		for _, p := range n.controllerPods() {
			logs, err := n.cs.CoreV1().Pods("podtls-system").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(n.ctx)
			if err == nil && bytes.Contains(logs, []byte(s)) {
				n.t.Logf("controller %s logged %q %s after the upgrade", p.Name, s, time.Since(since).Round(time.Millisecond))
				return
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("no controller logged %q within 3m", s)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// node bundles what the steps of the node test share.
type node struct {
	t            *testing.T
	ctx          context.Context
	c            *cluster.Cluster
	cs           kubernetes.Interface
	sidecarImage string
}

func (n node) controllerPods() []corev1.Pod {
	n.t.Helper()
	pods, err := n.cs.CoreV1().Pods("podtls-system").List(n.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
	if err != nil {
		n.t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// scale sets the controller's replicas and waits until exactly that many pods exist, none
// of them terminating (a terminating controller drains: it still admits pods for
// --shutdown-delay), and the Deployment's rollout is complete.
func (n node) scale(replicas int) {
	n.t.Helper()
	if _, err := n.c.RunKubectl(n.ctx, "-n", "podtls-system", "scale", "deployment", "podtls-controller",
		"--replicas="+strconv.Itoa(replicas)); err != nil {
		n.t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		d, err := n.cs.AppsV1().Deployments("podtls-system").Get(n.ctx, "podtls-controller", metav1.GetOptions{})
		all, lerr := n.cs.CoreV1().Pods("podtls-system").List(n.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err == nil && lerr == nil && len(all.Items) == replicas && len(n.controllerPods()) == replicas && int(d.Status.AvailableReplicas) == replicas &&
			int(d.Status.UpdatedReplicas) == replicas && d.Status.ObservedGeneration == d.Generation {
			return
		}
		if time.Now().After(deadline) {
			out, _ := n.c.RunKubectl(n.ctx, "-n", "podtls-system", "describe", "pods")
			n.t.Fatalf("controller not at %d available replicas after 3m (err %v):\n%s", replicas, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitInjecting waits for two available replicas and then until a dry-run creation is
// injected. Ready replicas are not yet reachable through the Service everywhere
// (kube-proxy catches up), and pods that opt in by annotation are admitted without the
// sidecar while the webhook is unreachable (failurePolicy Ignore).
func (n node) waitInjecting(since time.Time) {
	n.t.Helper()
	n.scale(2)
	n.t.Logf("2 controller replicas available %s after the install", time.Since(since).Round(time.Millisecond))
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default",
			Annotations: map[string]string{"podtls.io/inject": "true", "podtls.io/inbound": "8443:8080"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: n.sidecarImage}}},
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p, err := n.cs.CoreV1().Pods("default").Create(n.ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && len(p.Spec.InitContainers) > 0 {
			break
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("dry-run pods still not injected 2m after the controller was available (err %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n.t.Logf("webhook injecting %s after the install", time.Since(since).Round(time.Millisecond))
}

func (n node) helmTestPasses(in mesh.Install) {
	n.t.Helper()
	t0 := time.Now()
	out, err := in.Test(n.ctx, n.cs)
	if err != nil {
		desc, _ := n.c.RunKubectl(n.ctx, "-n", "default", "describe", "pod", "podtls-controller-test-injection")
		logs, _ := n.c.RunKubectl(n.ctx, "-n", "default", "logs", "podtls-controller-test-injection", "--all-containers")
		n.t.Fatalf("helm test: %v\n%s\n%s", err, desc, logs)
	}
	if !regexp.MustCompile(`Phase:\s+Succeeded`).Match(out) {
		n.t.Errorf("helm test output does not report success:\n%s", out)
	}
	n.t.Logf("helm test passed in %s", time.Since(t0).Round(time.Millisecond))
}

// corpCA makes a "corporate" root and an intermediate signed by it, and returns the root
// PEM and the Secret data the chart's ca.existingSecret expects (tls.crt, tls.key, ca.crt).
func corpCA(t *testing.T) ([]byte, map[string][]byte) {
	t.Helper()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rootKey, interKey := newKey(), newKey()
	ca := func(cn string, serial int64, pathLen int) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{Organization: []string{"Example Corp"}, CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
			MaxPathLen: pathLen, MaxPathLenZero: pathLen == 0,
		}
	}
	rootTmpl := ca("Example Corp Root", 1, 1)
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	interDER, err := x509.CreateCertificate(rand.Reader, ca("Example Corp podtls intermediate", 2, 0), root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	return rootPEM, map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"ca.crt":  rootPEM,
	}
}
