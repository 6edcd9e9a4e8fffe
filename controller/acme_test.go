package controller

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

// TestRunWithBadACMEConfig: a broken --acme-config must not take the webhook
// and the CA down; pods asking for external hosts learn why nothing is issued.
func TestRunWithBadACMEConfig(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	env.CreateNamespace(t, "podtls-system", nil)
	env.CreateNamespace(t, "shop", nil)
	if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx,
		webhookconfig.MutatingWebhookConfiguration(webhookconfig.DefaultOptions()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte("directoryURL: ftp://acme.example\ndns: {provider: rfc2136}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := options.DefaultOptions()
	whPort, caPort, healthPort := poll.FreePort(t), poll.FreePort(t), poll.FreePort(t)
	opts.WebhookAddr, opts.CAAddr = fmt.Sprintf("127.0.0.1:%d", whPort), fmt.Sprintf("127.0.0.1:%d", caPort)
	opts.HealthAddr, opts.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", healthPort), "0"
	opts.WebhookURL = fmt.Sprintf("https://127.0.0.1:%d", whPort)
	opts.ACMEConfig = cfgFile
	opts.ShutdownTimeout = 5 * time.Second
	opts.ShutdownDelay = 0
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, opts, env.Config) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("controller did not stop within 20s")
		}
	})

	poll.Eventually(t, time.Minute, "readyz with a bad ACME config", func() (bool, string) {
		failIfExited(t, done)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	hosts := "shop.example.test"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: map[string]string{
		contract.Status: `{"version":"test"}`, contract.ExternalHosts: hosts,
		contract.ExternalSecret: contract.ExternalSecretName([]string{hosts})}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	var msg string
	poll.Eventually(t, time.Minute, "ExternalCertNoIssuer event", func() (bool, string) {
		failIfExited(t, done)
		evs := &corev1.EventList{}
		if err := env.Client.List(ctx, evs); err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "web" && e.Reason == status.EventNotConfigured {
				msg = e.Message
				return true, ""
			}
		}
		return false, "no such Event yet"
	})
	if !strings.Contains(msg, "directoryURL") {
		t.Errorf("event does not say what is wrong with the config: %q", msg)
	}
	err := env.Client.Get(ctx, types.NamespacedName{Namespace: "shop", Name: contract.ExternalSecretName([]string{hosts})}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("Secret created without an issuer: %v", err)
	}
}

// failIfExited fails t at once if Run has returned (for use in a
// poll.Eventually condition).
func failIfExited(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("controller exited: %v", err)
	default:
	}
}
