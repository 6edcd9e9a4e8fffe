package testctl_test

import (
	"testing"

	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/testctl"
)

// TestStartStop: Start returns a ready controller; Stop ends Run without
// error, reports it only once, and leaves Exited and Ready telling the truth.
func TestStartStop(t *testing.T) {
	env := kubetest.Start(t)
	const ns = "podtls-system"
	env.CreateNamespace(t, ns, nil)
	testctl.CreateWebhookConfiguration(t, env.Clientset)
	opts := testctl.Options(t, ns)

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
