package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

// TestServingCertificatesFollowTheCA: after a root rotation's switch the
// controller's own serving certificates (webhook and sign API) come from
// the new intermediate once it has re-read the CA Secret, so retiring the
// old root does not cut off the API server or the sidecars.
func TestServingCertificatesFollowTheCA(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	env.CreateNamespace(t, "podtls-system", nil)
	if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx,
		webhookconfig.MutatingWebhookConfiguration(webhookconfig.DefaultOptions()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	opts := options.DefaultOptions()
	whPort, caPort, healthPort := poll.FreePort(t), poll.FreePort(t), poll.FreePort(t)
	opts.WebhookAddr, opts.CAAddr = fmt.Sprintf("127.0.0.1:%d", whPort), fmt.Sprintf("127.0.0.1:%d", caPort)
	opts.HealthAddr, opts.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", healthPort), "0"
	opts.WebhookURL = fmt.Sprintf("https://127.0.0.1:%d", whPort)
	opts.ShutdownTimeout, opts.ShutdownDelay = 5*time.Second, 0
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
	poll.Eventually(t, time.Minute, "readyz", func() (bool, string) {
		failIfExited(t, done)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	// The issuer key ID of the leaf a port serves.
	served := func(port int) []byte {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
			&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the chain, not trusting it
		if err != nil {
			return nil
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].AuthorityKeyId
	}

	secrets := env.Clientset.CoreV1().Secrets("podtls-system")
	sec, err := secrets.Get(ctx, ca.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := ca.RotationPublish(sec.Data, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if data, err = ca.RotationSwitch(data, time.Now()); err != nil {
		t.Fatal(err)
	}
	sec.Data = data
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := ca.ReadRotation(data)
	if err != nil {
		t.Fatal(err)
	}
	want := r.Intermediate.SubjectKeyId
	// The refresher re-reads the Secret every minute.
	poll.Eventually(t, ca.DefaultRefreshInterval+30*time.Second, "webhook and sign API serving leaves of the new intermediate", func() (bool, string) {
		failIfExited(t, done)
		wh, signAPI := served(whPort), served(caPort)
		return bytes.Equal(wh, want) && bytes.Equal(signAPI, want), fmt.Sprintf("webhook %x, sign API %x, want %x", wh, signAPI, want)
	})
}
