// Package webhook_test proves the admission semantics of the podtls webhook on a
// real kube-apiserver + etcd (envtest, ServiceAccount admission enabled as on a
// real cluster): pods created with client-go and with the real kubectl.
package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook"
	"github.com/podtls/podtls/webhook/inject"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

const (
	labelledNS   = "e2e-labelled"
	unlabelledNS = "e2e-plain"
)

func pod(ns, name string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "localhost/app:1"}}},
	}
}

// sidecars counts podtls sidecars in every container list.
func sidecars(p *corev1.Pod) int {
	n := 0
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == contract.ContainerName {
			n++
		}
	}
	return n
}

// admissionsCount reads podtls_webhook_admissions_total{result,reason}.
func admissionsCount(t *testing.T, result, reason string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "podtls_webhook_admissions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "result") == result && label(m, "reason") == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// startWebhook serves the webhook where envtest pointed the configuration, with
// namespace labels from a real informer cache. It returns a stop function that
// waits until the port is closed.
func startWebhook(t *testing.T, env *kubetest.Env) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nsCache, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nsCache.GetInformer(ctx, &corev1.Namespace{}); err != nil {
		t.Fatal(err)
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- nsCache.Start(ctx) }()
	if !nsCache.WaitForCacheSync(ctx) {
		t.Fatal("namespace cache did not sync")
	}

	cfg := inject.DefaultConfig()
	cfg.TrustRootsPEM = "-----BEGIN CERTIFICATE-----\nE2E\n-----END CERTIFICATE-----\n"
	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{
		Host: env.Webhook.LocalServingHost, Port: env.Webhook.LocalServingPort, CertDir: env.Webhook.LocalServingCertDir,
	})
	secrets, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	webhook.Register(srv, nsCache, secrets, webhook.NewConfigSource(cfg))
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Start(ctx) }()
	addr := net.JoinHostPort(env.Webhook.LocalServingHost, strconv.Itoa(env.Webhook.LocalServingPort))
	poll.Eventually(t, 30*time.Second, "webhook server listening on "+addr, func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	})
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for _, ch := range []chan error{srvDone, cacheDone} {
			if err := <-ch; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("webhook shutdown: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestAdmission(t *testing.T) {
	opts := webhookconfig.DefaultOptions()
	env := kubetest.Start(t, kubetest.WithMutatingWebhooks(webhookconfig.MutatingWebhookConfiguration(opts)))
	ctx := t.Context()
	env.CreateNamespace(t, labelledNS, map[string]string{contract.Inject: contract.NamespaceEnabled})
	env.CreateNamespace(t, unlabelledNS, nil)
	if _, err := env.Clientset.CoreV1().ServiceAccounts("kube-system").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	stop := startWebhook(t, env)
	pods := env.Clientset.CoreV1()

	t.Run("labelled namespace, client-go: injected once despite reinvocation", func(t *testing.T) {
		before := admissionsCount(t, webhook.ResultSkipped, string(inject.ReasonAlreadyInjected))
		p, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "client-go", map[string]string{contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if n := sidecars(p); n != 1 || p.Spec.InitContainers[0].Name != contract.ContainerName {
			t.Fatalf("want exactly one native sidecar first, got %d: %+v", n, p.Spec.InitContainers)
		}
		if p.Annotations[contract.Status] == "" {
			t.Error("no status annotation")
		}
		// The ServiceAccount plugin mounted its token into our sidecar too, which
		// re-invoked the webhook (reinvocationPolicy IfNeeded); that run was a no-op.
		if after := admissionsCount(t, webhook.ResultSkipped, string(inject.ReasonAlreadyInjected)); after <= before {
			t.Errorf("the API server did not re-invoke the webhook (already-injected count %v -> %v)", before, after)
		}
		hasAPIAccess := false
		for _, m := range p.Spec.InitContainers[0].VolumeMounts {
			hasAPIAccess = hasAPIAccess || strings.HasPrefix(m.Name, "kube-api-access-")
		}
		if !hasAPIAccess {
			t.Error("ServiceAccount admission did not run after the webhook")
		}
	})

	t.Run("app-owned certificates: the password Secret must exist", func(t *testing.T) {
		ann := map[string]string{contract.AppCerts: "/etc/tls", contract.AppCertFormats: "jks", contract.AppCertPassword: "store-pass/keystore"}
		_, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "app-certs-missing", ann), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "Secret "+labelledNS+"/store-pass does not exist") {
			t.Fatalf("create without the Secret: %v", err)
		}
		if _, err := pods.Secrets(labelledNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "store-pass"},
			StringData: map[string]string{"keystore": "not-a-real-password"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "app-certs", ann), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create with the Secret: %v", err)
		}
		mounted := false
		for _, m := range p.Spec.Containers[0].VolumeMounts {
			mounted = mounted || (m.Name == contract.AppCertsVolume && m.MountPath == "/etc/tls" && m.ReadOnly)
		}
		if !mounted || p.Spec.SecurityContext == nil || p.Spec.SecurityContext.FSGroup == nil {
			t.Fatalf("app container mounts %+v, pod security context %+v", p.Spec.Containers[0].VolumeMounts, p.Spec.SecurityContext)
		}
	})

	t.Run("labelled namespace, kubectl: injected, warning shown", func(t *testing.T) {
		cmd := env.KubectlCommand(ctx, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: kubectl
  namespace: %s
  annotations:
    podtls.io/inbound: "8443:8080"
spec:
  containers:
  - name: app
    image: localhost/app:1
    ports:
    - containerPort: 8080
`, labelledNS))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "Warning: annotation podtls.io/inbound: container \"app\" declares port 8080") {
			t.Errorf("kubectl did not show the admission warning:\n%s", out)
		}
		got, err := env.Kubectl(ctx, "get", "pod", "-n", labelledNS, "kubectl", "-o",
			"jsonpath={.spec.initContainers[*].name}/{.spec.initContainers[0].restartPolicy}")
		if err != nil || got != contract.ContainerName+"/Always" {
			t.Errorf("kubectl get: %q, %v", got, err)
		}
	})

	t.Run("labelled namespace, kubectl: pod without listeners skipped with a warning", func(t *testing.T) {
		cmd := env.KubectlCommand(ctx, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"idle","namespace":%q},
"spec":{"containers":[{"name":"app","image":"localhost/app:1"}]}}`, labelledNS))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Warning: podtls: pod not injected") {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		p, err := pods.Pods(labelledNS).Get(ctx, "idle", metav1.GetOptions{})
		if err != nil || sidecars(p) != 0 {
			t.Fatalf("want untouched pod: %v", err)
		}
	})

	t.Run("labelled namespace, pod opts out", func(t *testing.T) {
		p, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "opt-out", map[string]string{contract.Inject: "false"}), metav1.CreateOptions{})
		if err != nil || sidecars(p) != 0 || p.Annotations[contract.Status] != "" {
			t.Fatalf("want untouched pod: err=%v sidecars=%d", err, sidecars(p))
		}
	})

	t.Run("unlabelled namespace, pod opts in", func(t *testing.T) {
		p, err := pods.Pods(unlabelledNS).Create(ctx, pod(unlabelledNS, "opt-in",
			map[string]string{contract.Inject: "true", contract.Upstreams: "preference.demo.svc:8443@9001"}), metav1.CreateOptions{})
		if err != nil || sidecars(p) != 1 {
			t.Fatalf("want injected pod: err=%v sidecars=%d", err, sidecars(p))
		}
	})

	t.Run("unlabelled namespace, plain pod untouched", func(t *testing.T) {
		p, err := pods.Pods(unlabelledNS).Create(ctx, pod(unlabelledNS, "plain", nil), metav1.CreateOptions{})
		if err != nil || sidecars(p) != 0 {
			t.Fatalf("want untouched pod: err=%v sidecars=%d", err, sidecars(p))
		}
	})

	t.Run("legacy mode accepted by the API server", func(t *testing.T) {
		p, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "legacy", map[string]string{
			contract.SidecarMode: string(contract.SidecarModeLegacy), contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if sidecars(p) != 1 || p.Spec.Containers[0].Name != contract.ContainerName || p.Spec.Containers[0].Lifecycle == nil ||
			p.Annotations[contract.DefaultContainer] != "app" {
			t.Fatalf("want the sidecar as first container with a postStart hook: %+v", p.Spec.Containers)
		}
	})

	t.Run("external hosts: optional Secret volume", func(t *testing.T) {
		p, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "external", map[string]string{
			contract.ExternalHosts: "shop.example.com", contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		want := contract.ExternalSecretName([]string{"shop.example.com"})
		if p.Annotations[contract.ExternalSecret] != want {
			t.Errorf("external secret annotation %q, want %q", p.Annotations[contract.ExternalSecret], want)
		}
	})

	t.Run("system namespace untouched", func(t *testing.T) {
		p, err := pods.Pods("kube-system").Create(ctx, pod("kube-system", "system", map[string]string{contract.Inject: "true"}), metav1.CreateOptions{})
		if err != nil || sidecars(p) != 0 {
			t.Fatalf("want untouched pod: err=%v sidecars=%d", err, sidecars(p))
		}
	})

	t.Run("bad annotation denied with the annotation named", func(t *testing.T) {
		_, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "bad", map[string]string{contract.Upstreams: "preference.demo.svc@9001"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "annotation podtls.io/upstreams") || !strings.Contains(err.Error(), "HOST:PORT@LOCALPORT") {
			t.Fatalf("want denial naming podtls.io/upstreams, got %v", err)
		}
		// The same through kubectl, as the user sees it.
		cmd := env.KubectlCommand(ctx, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad-kubectl","namespace":%q,
"annotations":{"podtls.io/inject":"true","podtls.io/cert-ttl":"30d"}},"spec":{"containers":[{"name":"app","image":"localhost/app:1"}]}}`, unlabelledNS))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "denied the request") || !strings.Contains(string(out), "annotation podtls.io/cert-ttl") {
			t.Fatalf("kubectl: want denial naming podtls.io/cert-ttl, got %v:\n%s", err, out)
		}
	})

	t.Run("controller down: labelled namespace refuses, others admit", func(t *testing.T) {
		stop()
		_, err := pods.Pods(labelledNS).Create(ctx, pod(labelledNS, "while-down", map[string]string{contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), webhookconfig.LabelledWebhook) {
			t.Fatalf("labelled namespace admitted a pod without the webhook: %v", err)
		}
		p, err := pods.Pods(unlabelledNS).Create(ctx, pod(unlabelledNS, "while-down",
			map[string]string{contract.Inject: "true", contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("failurePolicy Ignore should admit: %v", err)
		}
		if sidecars(p) != 0 {
			t.Fatal("injected without a webhook?")
		}
	})
}
