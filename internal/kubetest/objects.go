package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// ServeWebhooks serves hooks (path -> handler, e.g. a controller-runtime *webhook.Admission)
// with controller-runtime's webhook server on the address and certificate the API server was
// given by WithWebhooks/WithMutatingWebhooks. It returns once the server accepts TLS
// connections and stops it in t.Cleanup.
func (e *Env) ServeWebhooks(t testing.TB, hooks map[string]http.Handler) webhook.Server {
	t.Helper()
	w := e.Webhook
	if w == nil || w.LocalServingPort == 0 {
		t.Fatal("kubetest: ServeWebhooks needs Start(t, WithMutatingWebhooks(...)) or WithWebhooks")
	}
	srv := webhook.NewServer(webhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir})
	for path, h := range hooks {
		srv.Register(path, h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var serveErr error
	done := make(chan struct{}) // closed when Start returns; serveErr is set before
	go func() {
		serveErr = srv.Start(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if serveErr != nil {
			t.Errorf("kubetest: webhook server: %v", serveErr)
		}
	})

	started := srv.StartedChecker()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := started(nil)
		if err == nil {
			return srv
		}
		select {
		case <-done:
			t.Fatalf("kubetest: webhook server on %s:%d exited: %v", w.LocalServingHost, w.LocalServingPort, serveErr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: webhook server on %s:%d not serving after 30s: %v", w.LocalServingHost, w.LocalServingPort, err)
		}
	}
}

// CreateNamespace creates a namespace with the given labels and its "default"
// ServiceAccount (the controller-manager's job on a real cluster). The namespace is not
// deleted afterwards: without a controller-manager, deletion never finishes.
func (e *Env) CreateNamespace(t testing.TB, name string, labels map[string]string) *corev1.Namespace {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("kubetest: create namespace %s: %v", name, err)
	}
	e.CreateServiceAccount(t, name, "default")
	return ns
}

// CreateServiceAccount creates a ServiceAccount.
func (e *Env) CreateServiceAccount(t testing.TB, namespace, name string) *corev1.ServiceAccount {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := e.Client.Create(t.Context(), sa); err != nil {
		t.Fatalf("kubetest: create service account %s/%s: %v", namespace, name, err)
	}
	return sa
}

// Token mints a ServiceAccount token with the TokenRequest API, like the kubelet does for a
// projected token volume. With boundPod (which must exist, with its UID) the token is bound
// to that pod: it stops working when the pod is deleted, and a TokenReview reports the pod's
// name and UID in the extras authentication.kubernetes.io/pod-name and pod-uid. expiry 0
// means the API server's default (1h); the API server refuses less than 10 minutes.
func (e *Env) Token(t testing.TB, namespace, serviceAccount, audience string, expiry time.Duration, boundPod *corev1.Pod) string {
	t.Helper()
	token, err := e.RequestToken(t.Context(), namespace, serviceAccount, audience, expiry, boundPod)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return token
}

// RequestToken is Token returning an error instead of failing the test.
func (e *Env) RequestToken(ctx context.Context, namespace, serviceAccount, audience string, expiry time.Duration, boundPod *corev1.Pod) (string, error) {
	req := &authenticationv1.TokenRequest{}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	if expiry > 0 {
		secs := int64(expiry / time.Second)
		req.Spec.ExpirationSeconds = &secs
	}
	if boundPod != nil {
		if boundPod.UID == "" {
			return "", errors.New("request token: bound pod has no UID (pass the pod as returned by the API server)")
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: boundPod.Name, UID: boundPod.UID,
		}
	}
	resp, err := e.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for service account %s/%s: %w", namespace, serviceAccount, err)
	}
	return resp.Status.Token, nil
}

// Kubectl runs the real kubectl against this control plane and returns its combined output.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := e.KubectlCommand(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// KubectlCommand prepares a kubectl command using KubeconfigPath, for callers that want to
// set stdin or stream output.
func (e *Env) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.KubectlPath, append([]string{"--kubeconfig", e.KubeconfigPath}, args...)...)
	// Keep the user's own kubeconfig and cache out of it.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.KubeconfigPath, "KUBECACHEDIR="+filepath.Join(filepath.Dir(e.KubeconfigPath), "kubecache"))
	return cmd
}
