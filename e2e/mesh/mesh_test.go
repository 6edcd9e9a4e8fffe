package mesh

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

const (
	controllerImage = "localhost/podtls/controller:e2e"
	sidecarImage    = "localhost/podtls/sidecar:e2e"
	echoImage       = "localhost/podtls/echo:e2e"
	whoamiImage     = "localhost/podtls/whoami:e2e"

	systemNS   = "podtls-system"
	ns         = "demo"
	sidecar    = "podtls-sidecar"
	upstreams  = "preference.demo.svc:8443@9001"
	customerID = "spiffe://cluster.local/ns/demo/sa/customer"
	prefID     = "spiffe://cluster.local/ns/demo/sa/preference"
	prefDNS    = "preference.demo.svc"
	adminPort  = "15000"
	// controllerMetricsPort is the controller's plain-HTTP /metrics (chart port "metrics").
	controllerMetricsPort = "8080"
	inboundTLS            = "8443"
)

// TestMesh installs podtls like a user and runs two workloads over mTLS through their
// injected sidecars: allowed caller, refused caller, and a Job that completes.
func TestMesh(t *testing.T) {
	cluster.Require(t, "mesh")
	tTest := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}

	tBuild := time.Now()
	images := buildImages(ctx, t, root)
	buildTime := time.Since(tBuild)

	tUp := time.Now()
	c, err := cluster.Up(ctx, cluster.Options{Images: images, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	upTime := time.Since(tUp)
	t.Cleanup(func() {
		_ = c.Down()
		if t.Failed() {
			t.Logf("component logs: %s", c.LogDir())
		}
	})
	// Registered after Down, so it runs first (when the test stops early; otherwise
	// the dump happens before the explicit Down below).
	dumped := false
	dumpOnFailure := func() {
		if t.Failed() && !dumped {
			dumped = true
			dump(t, c)
		}
	}
	t.Cleanup(dumpOnFailure)
	cs := c.Client

	// Install as a user would: plain objects, then wait for the controller.
	tInstall := time.Now()
	// Two replicas as in production: they race to create the CA Secret on first start,
	// and one can restart while the other keeps admitting pods.
	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 2}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 2*time.Minute, "podtls-controller available", func() bool {
		d, err := cs.AppsV1().Deployments(systemNS).Get(ctx, controllerName, metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == in.Replicas
	})
	waitFor(ctx, t, time.Minute, "caBundle patched into both webhooks", func() bool {
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookName, metav1.GetOptions{})
		if err != nil || len(mwc.Webhooks) != 2 {
			return false
		}
		for _, w := range mwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return false
			}
		}
		return true
	})
	controllerReady := time.Since(tInstall)

	// The user's side: a labelled namespace and annotated workloads.
	if _, err := c.RunKubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunKubectl(ctx, "label", "namespace", ns, "podtls.io/inject=enabled"); err != nil {
		t.Fatal(err)
	}
	tPref := time.Now()
	manifest, err := filepath.Abs(filepath.Join("testdata", "preference.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunKubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	admin := adminClient(c)
	var pref *corev1.Pod
	waitFor(ctx, t, 2*time.Minute, "preference pod running with a mesh certificate", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=preference"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.PodIP == "" {
			return false
		}
		pref = &pods.Items[0]
		snap, err := certsOf(ctx, admin, pref.Status.PodIP)
		return err == nil && snap.Mesh != nil
	})
	firstCert := time.Since(tPref)
	waitFor(ctx, t, 2*time.Minute, "deployment preference available", func() bool {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "preference", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 1
	})
	prefAvailable := time.Since(tPref)
	pref, err = cs.CoreV1().Pods(ns).Get(ctx, pref.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("native sidecar starts before the app", func(t *testing.T) {
		checkNativeSidecar(t, pref)
	})

	t.Run("certificate carries the identity and chains to the trust bundle", func(t *testing.T) {
		snap, err := certsOf(ctx, admin, pref.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		// The certificate came from the controller's CA through the sidecar's agent.
		m, err := metricsOf(ctx, admin, pref.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		if signed := m[`podtls_sidecar_agent_sign_requests_total{result="success"}`]; signed < 1 {
			t.Errorf("sidecar agent signed %v times, want at least 1", signed)
		}
		if !snap.Ready {
			t.Error("/certs says the sidecar is not ready")
		}
		if !slices.Contains(snap.Mesh.URIs, prefID) {
			t.Errorf("mesh certificate URIs %v, want %s", snap.Mesh.URIs, prefID)
		}
		if !slices.Contains(snap.Mesh.DNSNames, prefDNS) {
			t.Errorf("mesh certificate DNS names %v, want %s (added by the CA from the Service)", snap.Mesh.DNSNames, prefDNS)
		}
		var bundle string
		waitFor(ctx, t, time.Minute, "trust bundle ConfigMap in "+ns, func() bool {
			cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "podtls-trust-bundle", metav1.GetOptions{})
			if err != nil {
				return false
			}
			bundle = cm.Data["ca.crt"]
			return bundle != ""
		})
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(bundle)) {
			t.Fatalf("trust bundle holds no certificate: %q", bundle)
		}
		// The certificate the sidecar really serves on its inbound port, not a report of it.
		chain, err := servedChain(ctx, c, net.JoinHostPort(pref.Status.PodIP, inboundTLS))
		if err != nil {
			t.Fatal(err)
		}
		inter := x509.NewCertPool()
		for _, crt := range chain[1:] {
			inter.AddCert(crt)
		}
		if !slices.ContainsFunc(chain[0].URIs, func(u *url.URL) bool { return u.String() == prefID }) {
			t.Errorf("served certificate URIs %v, want %s", chain[0].URIs, prefID)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: prefDNS,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("served certificate does not verify against the trust bundle for %s: %v", prefDNS, err)
		}
	})

	t.Run("allowed caller reaches preference through its sidecar", func(t *testing.T) {
		pod := runCaller(ctx, t, cs, "customer", "customer", whoamiImage, "60s", 0)
		checkNativeSidecar(t, pod)
		if pod.Status.Phase != corev1.PodSucceeded {
			t.Fatalf("customer pod %s, want Succeeded; app log: %s", pod.Status.Phase, logsOf(ctx, cs, pod.Name, "app"))
		}
		// The server's app names the identity its sidecar verified (HTTP mode header); the
		// identity the client forged in the same header is gone.
		body := strings.TrimSpace(logsOf(ctx, cs, pod.Name, "app"))
		if want := pref.Name + " client-id=" + customerID; body != want {
			t.Errorf("customer got %q, want %q", body, want)
		}
	})

	t.Run("caller outside the allow list is refused", func(t *testing.T) {
		before, err := metricsOf(ctx, admin, pref.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		requestsBefore := strings.Count(logsOf(ctx, cs, pref.Name, "app"), `"msg":"request"`)
		pod := runCaller(ctx, t, cs, "intruder", "intruder", echoImage, "8s", 0)
		if pod.Status.Phase != corev1.PodFailed {
			t.Fatalf("intruder pod %s, want Failed; app log: %s", pod.Status.Phase, logsOf(ctx, cs, pod.Name, "app"))
		}
		if out := logsOf(ctx, cs, pod.Name, "app"); strings.Contains(out, pref.Name) {
			t.Errorf("intruder got an answer from preference: %q", out)
		}
		after, err := metricsOf(ctx, admin, pref.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		refused := `podtls_sidecar_handshake_failures_total{direction="inbound",reason="identity_not_allowed"}`
		if after[refused] <= before[refused] {
			t.Errorf("%s went from %v to %v, want an increase", refused, before[refused], after[refused])
		}
		// Nothing reached the app: no request logged, the inbound byte counter stands still.
		appLog := logsOf(ctx, cs, pref.Name, "app")
		if n := strings.Count(appLog, `"msg":"request"`); n != requestsBefore {
			t.Errorf("preference's app logged %d requests before the intruder and %d after:\n%s", requestsBefore, n, appLog)
		}
		forwarded := `podtls_sidecar_received_bytes_total{direction="inbound"}`
		if after[forwarded] != before[forwarded] {
			t.Errorf("%s went from %v to %v: bytes of the intruder reached the app", forwarded, before[forwarded], after[forwarded])
		}
	})

	t.Run("job with an injected sidecar completes", func(t *testing.T) {
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "report"},
			Spec: batchv1.JobSpec{
				BackoffLimit: ptr.To[int32](0),
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "report"},
						Annotations: map[string]string{"podtls.io/upstreams": upstreams}},
					Spec: corev1.PodSpec{
						ServiceAccountName: "customer", RestartPolicy: corev1.RestartPolicyNever,
						TerminationGracePeriodSeconds: ptr.To[int64](5),
						Containers: []corev1.Container{{
							Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever,
							Args: []string{"get", "-timeout", "60s", "http://127.0.0.1:9001/"},
						}},
					},
				},
			},
		}
		t0 := time.Now()
		if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var failed bool
		waitFor(ctx, t, 2*time.Minute, "job report to finish", func() bool {
			j, err := cs.BatchV1().Jobs(ns).Get(ctx, "report", metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, cond := range j.Status.Conditions {
				if cond.Status == corev1.ConditionTrue && (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) {
					failed = cond.Type == batchv1.JobFailed
					return true
				}
			}
			return false
		})
		if failed {
			t.Fatal("job report failed")
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=report"})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("job pods: %v (err %v)", len(pods.Items), err)
		}
		p := &pods.Items[0]
		if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != sidecar {
			t.Errorf("job pod was not injected")
		}
		if p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("job pod %s, want Succeeded", p.Status.Phase)
		}
		t.Logf("job completed in %s", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("podCertificate identity: kubelet key, signer's leaf, mTLS with agent pods", func(t *testing.T) {
		testPodCertificates(ctx, t, c)
	})

	t.Run("restarted controller keeps the CA and serves new pods", func(t *testing.T) {
		bundleOf := func() string {
			cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "podtls-trust-bundle", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return cm.Data["ca.crt"]
		}
		before := bundleOf()
		existing := map[string]bool{}
		live := controllerPods(ctx, t, cs)
		for _, p := range live {
			existing[p.Name] = true
		}
		old := live[0]
		// Admission is probed with dry-run creations (they go through the webhooks) from
		// the deletion until a while after the replacement is ready.
		probe := startAdmissionProbe(ctx, cs)
		t0 := time.Now()
		if err := cs.CoreV1().Pods(systemNS).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, 2*time.Minute, "a new ready controller pod", func() bool {
			pods, err := cs.CoreV1().Pods(systemNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
			if err != nil {
				return false
			}
			for _, p := range pods.Items {
				if !existing[p.Name] && p.DeletionTimestamp == nil && podReady(&p) {
					return true
				}
			}
			return false
		})
		t.Logf("new controller ready %s after deleting the old pod", time.Since(t0).Round(time.Millisecond))
		waitFor(ctx, t, time.Minute, "old controller pod gone", func() bool {
			_, err := cs.CoreV1().Pods(systemNS).Get(ctx, old.Name, metav1.GetOptions{})
			return err != nil
		})
		time.Sleep(3 * time.Second) // keep probing while kube-proxy settles on the new endpoints
		probes, refusals := probe.stop()
		t.Logf("%d dry-run creations during the restart, %d refused or not injected", probes, len(refusals))
		if len(refusals) > 0 {
			t.Errorf("with a second replica serving, a controller restart refused pods:\n%s", strings.Join(refusals, "\n"))
		}
		// A new pod is admitted, gets a certificate from the CA as loaded by the new replica
		// and is still trusted by preference's sidecar, which was not restarted. (With a
		// single replica and failurePolicy Fail, creations are refused for about one webhook
		// timeout, 5 s, after a restart: measured; hence two replicas.)
		pod := runCaller(ctx, t, cs, "customer-after-restart", "customer", whoamiImage, "60s", 0)
		checkNativeSidecar(t, pod)
		body := strings.TrimSpace(logsOf(ctx, cs, pod.Name, "app"))
		if want := pref.Name + " client-id=" + customerID; pod.Status.Phase != corev1.PodSucceeded || body != want {
			t.Errorf("after the restart the customer pod is %s and got %q, want Succeeded and %q", pod.Status.Phase, body, want)
		}
		if after := bundleOf(); after != before {
			t.Errorf("trust bundle changed across the controller restart:\nbefore %s\nafter %s", before, after)
		}
	})

	t.Run("controller runs with its least-privilege RBAC", func(t *testing.T) {
		type attr = authzv1.ResourceAttributes
		for _, tt := range []struct {
			attr attr
			want bool
		}{
			{attr{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}, true},
			{attr{Verb: "watch", Resource: "pods"}, true},
			{attr{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"}, true},
			{attr{Verb: "update", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: ns}, false},
			{attr{Verb: "update", Resource: "configmaps", Namespace: ns}, true},
			{attr{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: webhookName}, true},
			{attr{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "someone-else"}, false},
			{attr{Verb: "get", Resource: "secrets", Namespace: systemNS, Name: caSecretName}, true},
			{attr{Verb: "get", Resource: "secrets", Namespace: systemNS, Name: "other"}, false},
			{attr{Verb: "get", Resource: "secrets", Namespace: ns, Name: caSecretName}, false},
			{attr{Verb: "list", Resource: "secrets"}, false},
			{attr{Verb: "create", Resource: "pods", Namespace: ns}, false},
			{attr{Verb: "delete", Resource: "configmaps", Namespace: ns}, false},
			{attr{Verb: "update", Resource: "services", Namespace: ns}, false},
			{attr{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: ns}, false},
		} {
			got, err := in.Can(ctx, cs, tt.attr)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("controller may %s %s/%s %q in %q: %v, want %v", tt.attr.Verb, tt.attr.Group, tt.attr.Resource,
					tt.attr.Name, tt.attr.Namespace, got, tt.want)
			}
		}
		for _, p := range controllerPods(ctx, t, cs) {
			out, err := cs.CoreV1().Pods(systemNS).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "forbidden") || strings.Contains(line, "Forbidden") {
					t.Errorf("controller %s was refused by RBAC: %s", p.Name, line)
				}
				if strings.Contains(line, `"level":"ERROR"`) {
					t.Logf("controller %s error: %s", p.Name, line)
				}
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.RestartCount != 0 {
					t.Errorf("controller %s container %s restarted %d times", p.Name, st.Name, st.RestartCount)
				}
			}
		}
		if _, err := cs.CoreV1().Secrets(systemNS).Get(ctx, caSecretName, metav1.GetOptions{}); err != nil {
			t.Errorf("CA Secret: %v", err)
		}
	})

	dumpOnFailure()
	tDown := time.Now()
	if err := c.Down(); err != nil {
		t.Errorf("Down: %v", err)
	}
	downTime := time.Since(tDown)
	if left := cluster.Leftovers(cluster.DefaultBaseDir); len(left) > 0 {
		t.Errorf("left behind after Down: %s", strings.Join(left, "; "))
	}
	t.Logf("TIMINGS image builds %s; bring-up %s; controller ready (install -> available, caBundle patched) %s; "+
		"first certificate (kubectl apply -> mesh certificate on /certs) %s; preference available %s; tear-down %s; whole test %s; load average %s",
		buildTime.Round(time.Millisecond), upTime.Round(time.Millisecond), controllerReady.Round(time.Millisecond),
		firstCert.Round(time.Millisecond), prefAvailable.Round(time.Millisecond), downTime.Round(time.Millisecond),
		time.Since(tTest).Round(time.Millisecond), loadAverage())
}
