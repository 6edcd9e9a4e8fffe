package testctl_test

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testctl"
	"github.com/podtls/podtls/webhook/config"
	"github.com/podtls/podtls/webhook/controller"
)

// TestStartStop: Start returns a ready controller; Stop ends Run without
// error, reports it only once, and leaves Exited and Ready telling the truth.
func TestStartStop(t *testing.T) {
	env := kubetest.Start(t)
	const ns = "podtls-system"
	env.CreateNamespace(t, ns, nil)
	if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(t.Context(),
		config.MutatingWebhookConfiguration(config.DefaultOptions()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wh, ca, health := poll.FreePort(t), poll.FreePort(t), poll.FreePort(t)
	opts := controller.DefaultOptions()
	opts.Namespace = ns
	opts.WebhookAddr = fmt.Sprintf("127.0.0.1:%d", wh)
	opts.CAAddr = fmt.Sprintf("127.0.0.1:%d", ca)
	opts.HealthAddr = fmt.Sprintf("127.0.0.1:%d", health)
	opts.MetricsAddr = "0"
	opts.WebhookURL = fmt.Sprintf("https://127.0.0.1:%d", wh)
	opts.ShutdownTimeout = 5 * time.Second

	ctl := testctl.Start(t, env.Config, opts)
	if ok, why := ctl.Ready(); !ok {
		t.Fatalf("not ready after Start: %s", why)
	}
	if exited, err := ctl.Exited(); exited {
		t.Fatalf("exited after Start: %v", err)
	}
	if err := ctl.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if exited, err := ctl.Exited(); !exited || err != nil {
		t.Fatalf("after Stop: exited %v, err %v", exited, err)
	}
	if ok, _ := ctl.Ready(); ok {
		t.Fatal("still ready after Stop")
	}
	if err := ctl.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
