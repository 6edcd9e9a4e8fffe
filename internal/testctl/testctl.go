// Package testctl runs podtls-controller in-process for integration tests:
// controller.Run against a real API server (usually internal/kubetest's
// envtest), started in a goroutine, waited for until /readyz answers 200, and
// stopped at test cleanup at the latest.
//
//	env := kubetest.Start(t)
//	env.CreateNamespace(t, "podtls-system", nil)
//	testctl.CreateWebhookConfiguration(t, env.Clientset)
//	opts := testctl.Options(t, "podtls-system") // free loopback ports
//	opts.LeaderElect = true                      // whatever the test needs
//	ctl := testctl.Start(t, env.Config, opts)
//	...
//	if err := ctl.Stop(); err != nil { t.Errorf("controller.Run: %v", err) } // optional
package testctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podtls/podtls/controller"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

const (
	// ReadyTimeout bounds WaitReady: CA bootstrap, webhook certificate and
	// cache sync against envtest take a few seconds, more on a loaded machine.
	ReadyTimeout = 60 * time.Second
	// StopTimeout bounds how long Stop waits for Run to return after its
	// context is cancelled (opts.ShutdownTimeout plus slack).
	StopTimeout = 30 * time.Second
)

// Options returns options.DefaultOptions for namespace with the webhook,
// the CA and the health endpoints on free loopback ports, the API server
// calling the webhook by URL (envtest has no Services), metrics off and a
// short shutdown timeout and no shutdown delay. Tests change what they exercise on top.
func Options(t testing.TB, namespace string) options.Options {
	t.Helper()
	loopback := func() string { return fmt.Sprintf("127.0.0.1:%d", poll.FreePort(t)) }
	opts := options.DefaultOptions()
	opts.Namespace = namespace
	opts.WebhookAddr = loopback()
	opts.CAAddr = loopback()
	opts.HealthAddr = loopback()
	opts.MetricsAddr = "0"
	opts.WebhookURL = "https://" + opts.WebhookAddr
	opts.ShutdownTimeout = 5 * time.Second
	opts.ShutdownDelay = 0 // no Service endpoints to leave: stop at once
	return opts
}

// CreateWebhookConfiguration installs the MutatingWebhookConfiguration as
// the chart does (service client config, no caBundle yet), for the
// controller to patch.
func CreateWebhookConfiguration(t testing.TB, kube kubernetes.Interface) {
	t.Helper()
	mwc := webhookconfig.MutatingWebhookConfiguration(webhookconfig.DefaultOptions())
	if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(t.Context(), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create MutatingWebhookConfiguration %s: %v", mwc.Name, err)
	}
}

// Controller is one in-process run of controller.Run.
type Controller struct {
	opts   options.Options
	cancel context.CancelFunc
	exited chan struct{} // closed when Run has returned
	err    error         // Run's result; read only after exited is closed

	mu      sync.Mutex
	stopped bool
}

// Start launches the controller and waits for it to be ready (WaitReady).
func Start(t testing.TB, cfg *rest.Config, opts options.Options) *Controller {
	t.Helper()
	c := Launch(t, cfg, opts)
	c.WaitReady(t)
	return c
}

// Launch starts controller.Run(ctx, opts, cfg) in a goroutine and returns
// without waiting, e.g. to let several replicas race. It registers Stop with
// t.Cleanup; an error Stop has not already returned to a caller fails t there.
func Launch(t testing.TB, cfg *rest.Config, opts options.Options) *Controller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{opts: opts, cancel: cancel, exited: make(chan struct{})}
	go func() {
		c.err = controller.Run(ctx, opts, cfg)
		close(c.exited)
	}()
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("controller.Run: %v", err)
		}
	})
	return c
}

// WaitReady polls /readyz on opts.HealthAddr for up to ReadyTimeout; it fails
// t at once if Run returns meanwhile.
func (c *Controller) WaitReady(t testing.TB) {
	t.Helper()
	poll.Eventually(t, ReadyTimeout, "controller /readyz on "+c.opts.HealthAddr, func() (bool, string) {
		if exited, err := c.Exited(); exited {
			t.Fatalf("controller exited: %v", err)
		}
		return c.Ready()
	})
}

// Ready reports whether /readyz answers 200, and else why not.
func (c *Controller) Ready() (bool, string) {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://%s/readyz", c.opts.HealthAddr))
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %s", resp.Status, b)
}

// Exited reports, without blocking, whether Run has returned and with what.
func (c *Controller) Exited() (bool, error) {
	select {
	case <-c.exited:
		return true, c.err
	default:
		return false, nil
	}
}

// Stop cancels Run's context and waits up to StopTimeout for it to return.
// It returns Run's error (or a timeout error) on the first call and nil on
// later calls, so a test that inspects the error is not failed again at
// cleanup.
func (c *Controller) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	c.cancel()
	select {
	case <-c.exited:
		return c.err
	case <-time.After(StopTimeout):
		return errors.New("controller did not shut down within " + StopTimeout.String())
	}
}
