package chart

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/e2e/mesh"
	"github.com/podtls/podtls/internal/poll"
)

// Images of the upgrade test: the controller and sidecar repositories of every podtls
// build, tagged previousVersion for the previous release and currentTag for this checkout.
const (
	controllerRepo = "localhost/podtls/controller"
	sidecarRepo    = "localhost/podtls/sidecar"
	currentTag     = "dev"
	// whoamiImage is the app image e2e/mesh/testdata/preference.yaml runs.
	whoamiImage = "localhost/podtls/whoami:e2e"

	upgradeNS      = "demo" // preference.yaml's namespace
	preferenceDNS  = "preference.demo.svc"
	customerID     = "spiffe://cluster.local/ns/demo/sa/customer"
	preferenceTLS  = "8443"
	sidecarName    = "podtls-sidecar"
	caSecret       = "podtls-ca"
	trustBundle    = "podtls-trust-bundle"
	webhookConfig  = "podtls"
	newSidecarRuns = 20 // consecutive admissions by the new controller that end the probing
)

// TestUpgradeOnNode proves `helm upgrade` from the previous release (previousRelease,
// chart 0.1.0) to this checkout on the real single-node cluster: installed with two
// replicas, the previous release injects a workload; during the upgrade every admission
// in the labelled namespace (failurePolicy Fail) succeeds, but for the few refused the
// moment a 0.1.0 controller exits (it drains nothing); afterwards the CA is the same, the
// workload runs on untouched with a certificate of the same root, a new pod gets the new
// sidecar and talks mTLS to it, and `helm test` passes. Last, a rolling restart of this
// release (what its own upgrade will do) refuses no admission at all. A node suite: it runs with
// PODTLS_E2E_NODE=1 or PODTLS_REQUIRE_NODE=1 (see e2e/cluster.Require), and needs the git
// history holding previousRelease (it skips in a shallow clone).
func TestUpgradeOnNode(t *testing.T) {
	cluster.Require(t, "upgrade")
	helmBin(t)
	tTest := time.Now()
	root := repoRoot(t)
	prevDir := extractRelease(t, root, previousRelease)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	tBuild := time.Now()
	imgDir := t.TempDir()
	prev, images, err := buildRelease(ctx, prevDir, previousVersion, imgDir, "./webhook/cmd/podtls-controller", "./sidecar/cmd/podtls-sidecar")
	if err != nil {
		t.Fatal(err)
	}
	cur, curImages, err := buildRelease(ctx, root, currentTag, imgDir, "./controller/cmd/podtls-controller", "./sidecar/cmd/podtls-sidecar")
	if err != nil {
		t.Fatal(err)
	}
	whoami := filepath.Join(imgDir, "whoami.tar")
	if err := cluster.BuildImage(ctx, root, "./e2e/mesh/testdata/whoami", whoamiImage, whoami); err != nil {
		t.Fatal(err)
	}
	images = append(append(images, curImages...), whoami)
	buildTime := time.Since(tBuild)

	tUp := time.Now()
	c, err := cluster.Up(ctx, cluster.Options{RepoRoot: root, Images: images, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	upTime := time.Since(tUp)
	t.Cleanup(func() {
		if err := c.Down(); err != nil {
			t.Errorf("Down: %v", err)
		}
	})
	t.Cleanup(func() { // runs before Down
		if t.Failed() {
			dumpUpgrade(t, c)
		}
	})
	cs := c.Client
	n := node{t: t, ctx: ctx, c: c, cs: cs, sidecarImage: prev.sidecar}

	// The previous release as a user installed it: its own chart, its images, two replicas.
	in := mesh.Install{ControllerImage: prev.controller, SidecarImage: prev.sidecar, PullPolicy: corev1.PullNever,
		Replicas: 2, RepoRoot: root, Chart: prev.chart(), Values: map[string]any{"tests": map[string]any{"timeout": "15s"}}}
	t0 := time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatalf("install the previous release %s: %v", previousVersion, err)
	}
	n.waitInjecting(t0)
	prevReady := time.Since(t0)
	n.checkAntiAffinityPreferred()

	// A workload the previous release injected.
	for _, args := range [][]string{{"create", "namespace", upgradeNS}, {"label", "namespace", upgradeNS, "podtls.io/inject=enabled"},
		{"apply", "-f", filepath.Join(root, "e2e", "mesh", "testdata", "preference.yaml")}} {
		if _, err := c.RunKubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	pref := n.waitPreference()
	if got := pref.Spec.InitContainers[0].Image; got != prev.sidecar {
		t.Fatalf("preference was injected with %s, want the previous release's %s", got, prev.sidecar)
	}
	rootBefore, interBefore := n.caSecret()
	bundleBefore := n.trustBundle()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootBefore) {
		t.Fatalf("CA Secret %s holds no root certificate", caSecret)
	}
	served := n.verifyServed(pref, roots)
	t.Logf("previous release: preference %s (uid %s) serves certificate serial %x, chained to root %q",
		pref.Name, pref.UID, served.SerialNumber, firstSubject(rootBefore))

	// The upgrade, with pods created in the labelled namespace all along.
	prevPods := n.controllerPodNames()
	prevExits, err := watchExits(ctx, cs, prev.controller)
	if err != nil {
		t.Fatal(err)
	}
	probe := startAdmissions(ctx, cs, cur.sidecar)
	upgrade := in
	upgrade.ControllerImage, upgrade.SidecarImage, upgrade.Chart = cur.controller, cur.sidecar, ""
	t0 = time.Now()
	if err := upgrade.Apply(ctx, cs); err != nil {
		probe.stop()
		t.Fatalf("helm upgrade to this checkout: %v", err)
	}
	helmTime := time.Since(t0)
	n.waitRollout(cur.controller, prevPods)
	rolloutTime := time.Since(t0)
	poll.Eventually(t, 2*time.Minute, fmt.Sprintf("%d admissions in a row injected by the new controller", newSidecarRuns), func() (bool, string) {
		s := probe.snapshot()
		return s.streak >= newSidecarRuns, fmt.Sprintf("%d in a row so far, %d admissions, %d failed", s.streak, s.total, len(s.failures))
	})
	res := probe.stop()
	// 0.1.0's controller stops listening the moment it is signalled, while kube-proxy
	// and the API server's pooled connection still send admissions its way: those few
	// are refused (failurePolicy Fail), and nothing this release does can change how the
	// old pods exit. Any other failure, or one away from such an exit, fails the test.
	var excused, failed []string
	for _, f := range res.failures {
		if connectionLevel(f) && prevExits.near(f.at) {
			excused = append(excused, f.String())
		} else {
			failed = append(failed, f.String())
		}
	}
	t.Logf("admissions during the upgrade: %d, %d refused at the exit of a %s controller pod (%d exits seen), %d other failures; injected sidecars %v",
		res.total, len(excused), previousVersion, prevExits.count(), len(failed), res.bySidecar)
	if len(excused) > 0 {
		t.Logf("refused as a %s controller exited (it drains nothing; this release does, see --shutdown-delay):\n%s", previousVersion, strings.Join(excused, "\n"))
	}
	if len(failed) > 0 {
		t.Errorf("pod creations in the labelled namespace failed during the upgrade:\n%s", strings.Join(failed, "\n"))
	}
	if res.bySidecar[prev.sidecar] == 0 || res.bySidecar[cur.sidecar] == 0 {
		t.Errorf("the admissions did not span the upgrade: injected sidecars %v", res.bySidecar)
	}

	// The CA and the running workload are untouched.
	rootAfter, interAfter := n.caSecret()
	if !bytes.Equal(rootAfter, rootBefore) {
		t.Errorf("the upgrade changed the CA root:\nbefore %s\nafter %s", rootBefore, rootAfter)
	}
	if !bytes.Equal(interAfter, interBefore) {
		t.Errorf("the upgrade changed the CA's signing certificate:\nbefore %s\nafter %s", interBefore, interAfter)
	}
	if after := n.trustBundle(); after != bundleBefore {
		t.Errorf("the upgrade changed the trust bundle:\nbefore %s\nafter %s", bundleBefore, after)
	}
	n.checkCABundle(rootBefore)
	after := n.checkUntouched(pref)
	servedAfter := n.verifyServed(after, roots)
	t.Logf("after the upgrade preference serves serial %x (before %x), chained to the same root", servedAfter.SerialNumber, served.SerialNumber)

	// A new pod gets the new sidecar and calls the old one over mTLS: each side verifies
	// the other against the same root, and the old side checks the new one's identity.
	caller := n.runCustomer("customer-after-upgrade")
	if got := caller.Spec.InitContainers[0].Image; got != cur.sidecar {
		t.Errorf("new pod injected with %s, want %s", got, cur.sidecar)
	}
	body := strings.TrimSpace(n.logs(upgradeNS, caller.Name, "app"))
	if want := pref.Name + " client-id=" + customerID; caller.Status.Phase != corev1.PodSucceeded || body != want {
		t.Errorf("new pod %s got %q from the old one, want Succeeded and %q", caller.Status.Phase, body, want)
	}
	n.helmTestPasses(upgrade)

	// From this release on a rollout refuses nothing: a terminating controller drains
	// (--shutdown-delay). A restart is what the next upgrade does to this release's pods.
	restarted := n.controllerPodNames()
	probe = startAdmissions(ctx, cs, cur.sidecar)
	t0 = time.Now()
	if _, err := c.RunKubectl(ctx, "-n", "podtls-system", "rollout", "restart", "deployment/podtls-controller"); err != nil {
		probe.stop()
		t.Fatal(err)
	}
	n.waitRollout(cur.controller, restarted)
	restartTime := time.Since(t0)
	res2 := probe.stop()
	t.Logf("admissions during a rolling restart of the upgraded controller: %d, %d failed", res2.total, len(res2.failures))
	for _, f := range res2.failures {
		t.Errorf("pod creation failed during the rolling restart of this release: %s", f)
	}

	t.Logf("TIMINGS image builds (both releases) %s; bring-up %s; previous release injecting %s; helm upgrade command %s; "+
		"upgrade rollout (helm upgrade -> new controllers ready, old ones gone) %s; admissions during the upgrade %d (%d refused at a %s exit, %d other failures); "+
		"rolling restart of this release %s, admissions %d (%d failed); whole test %s",
		buildTime.Round(time.Millisecond), upTime.Round(time.Millisecond), prevReady.Round(time.Millisecond), helmTime.Round(time.Millisecond),
		rolloutTime.Round(time.Millisecond), res.total, len(excused), previousVersion, len(failed),
		restartTime.Round(time.Millisecond), res2.total, len(res2.failures), time.Since(tTest).Round(time.Millisecond))
}

// checkAntiAffinityPreferred: the chart's default anti-affinity only prefers different
// nodes, so both replicas run on the one node of the local cluster.
func (n node) checkAntiAffinityPreferred() {
	n.t.Helper()
	d, err := n.cs.AppsV1().Deployments("podtls-system").Get(n.ctx, "podtls-controller", metav1.GetOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	aa := d.Spec.Template.Spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 ||
		len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		n.t.Errorf("controller anti-affinity %+v, want preferred terms only", aa)
	}
}

// waitPreference waits until preference.yaml's Deployment is available and its pod's
// sidecar serves, and returns the pod.
func (n node) waitPreference() *corev1.Pod {
	n.t.Helper()
	var pod *corev1.Pod
	poll.Eventually(n.t, 3*time.Minute, "preference available", func() (bool, string) {
		d, err := n.cs.AppsV1().Deployments(upgradeNS).Get(n.ctx, "preference", metav1.GetOptions{})
		if err != nil || d.Status.AvailableReplicas != 1 {
			return false, fmt.Sprintf("deployment: %v", err)
		}
		pods, err := n.cs.CoreV1().Pods(upgradeNS).List(n.ctx, metav1.ListOptions{LabelSelector: "app=preference"})
		if err != nil || len(pods.Items) != 1 {
			return false, fmt.Sprintf("pods: %v", err)
		}
		pod = &pods.Items[0]
		if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != sidecarName {
			n.t.Fatalf("preference pod %s was not injected", pod.Name)
		}
		return true, ""
	})
	return pod
}

// caSecret returns the root (ca.crt) and the signing certificate (tls.crt) of the CA.
func (n node) caSecret() (rootPEM, interPEM []byte) {
	n.t.Helper()
	s, err := n.cs.CoreV1().Secrets("podtls-system").Get(n.ctx, caSecret, metav1.GetOptions{})
	if err != nil {
		n.t.Fatalf("CA Secret: %v", err)
	}
	return s.Data["ca.crt"], s.Data["tls.crt"]
}

func (n node) trustBundle() string {
	n.t.Helper()
	cm, err := n.cs.CoreV1().ConfigMaps(upgradeNS).Get(n.ctx, trustBundle, metav1.GetOptions{})
	if err != nil {
		n.t.Fatalf("trust bundle: %v", err)
	}
	return cm.Data["ca.crt"]
}

// checkCABundle: both webhooks still carry the root the API server verifies the
// controllers' serving certificates with.
func (n node) checkCABundle(rootPEM []byte) {
	n.t.Helper()
	mwc, err := n.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(n.ctx, webhookConfig, metav1.GetOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Contains(w.ClientConfig.CABundle, bytes.TrimSpace(rootPEM)) {
			n.t.Errorf("caBundle of %s lost the CA root", w.Name)
		}
	}
}

// checkUntouched: the pod is the same object, still running, and none of its containers
// restarted. It returns the pod as it is now.
func (n node) checkUntouched(before *corev1.Pod) *corev1.Pod {
	n.t.Helper()
	p, err := n.cs.CoreV1().Pods(upgradeNS).Get(n.ctx, before.Name, metav1.GetOptions{})
	if err != nil {
		n.t.Fatalf("the workload pod is gone after the upgrade: %v", err)
	}
	if p.UID != before.UID || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		n.t.Errorf("workload pod %s: uid %s (was %s), phase %s, deleting %v: want the same running pod",
			p.Name, p.UID, before.UID, p.Status.Phase, p.DeletionTimestamp != nil)
	}
	for _, st := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if st.RestartCount != 0 || st.State.Running == nil {
			n.t.Errorf("workload container %s: %d restarts, state %+v", st.Name, st.RestartCount, st.State)
		}
	}
	return p
}

// runCustomer runs a pod under preference.yaml's customer ServiceAccount that calls
// preference through its sidecar, and returns it once it has finished.
func (n node) runCustomer(name string) *corev1.Pod {
	n.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"podtls.io/upstreams": preferenceDNS + ":" + preferenceTLS + "@9001"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "customer", RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{Name: "app", Image: whoamiImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"get", "-timeout", "60s", "http://127.0.0.1:9001/"}}},
		},
	}
	if _, err := n.cs.CoreV1().Pods(upgradeNS).Create(n.ctx, pod, metav1.CreateOptions{}); err != nil {
		n.t.Fatalf("create pod %s: %v", name, err)
	}
	var got *corev1.Pod
	poll.Eventually(n.t, 2*time.Minute, "pod "+name+" to finish", func() (bool, string) {
		p, err := n.cs.CoreV1().Pods(upgradeNS).Get(n.ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got = p
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, string(p.Status.Phase)
	})
	if len(got.Spec.InitContainers) == 0 || got.Spec.InitContainers[0].Name != sidecarName {
		n.t.Fatalf("pod %s was not injected", name)
	}
	return got
}

func (n node) logs(ns, pod, container string) string {
	out, err := n.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(n.ctx)
	if err != nil {
		return fmt.Sprintf("<logs of %s/%s: %v>", pod, container, err)
	}
	return string(out)
}
