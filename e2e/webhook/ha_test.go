package webhook_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/testctl"
)

// TestTwoReplicas starts two controllers at the same moment, as a Deployment
// with two replicas does: they must agree on one CA, both serve it, and the
// leader-elected trust-bundle distributor must keep working when one goes away.
func TestTwoReplicas(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	const ctrlNS = "podtls-system"
	env.CreateNamespace(t, ctrlNS, nil)
	testctl.CreateWebhookConfiguration(t, env.Clientset)
	type replica struct {
		opts options.Options
		ctl  *testctl.Controller
	}
	// Both point the API server at the first replica's webhook, like one Service.
	whURL := ""
	replicas := make([]*replica, 2)
	for i := range replicas {
		o := testctl.Options(t, ctrlNS)
		if whURL == "" {
			whURL = o.WebhookURL
		}
		o.WebhookURL = whURL
		o.LeaderElect = true
		replicas[i] = &replica{opts: o}
	}
	for _, r := range replicas { // both race for the CA Secret and the lease
		r.ctl = testctl.Launch(t, env.Config, r.opts)
	}
	for _, r := range replicas {
		r.ctl.WaitReady(t)
	}

	sec, err := env.Clientset.CoreV1().Secrets(ctrlNS).Get(ctx, options.DefaultOptions().CASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := sec.Data["ca.crt"]
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("no roots in the CA Secret")
	}
	for i, r := range replicas {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
			ServerName: r.opts.ServiceName + "." + ctrlNS + ".svc"}}}
		resp, err := c.Get("https://" + r.opts.CAAddr + "/v1/trust-bundle")
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != string(roots) {
			t.Errorf("replica %d serves a different CA than the Secret", i)
		}
	}

	// One replica goes away; the other takes over (or keeps) the leader-elected reconcilers.
	if err := replicas[0].ctl.Stop(); err != nil {
		t.Errorf("controller.Run: %v", err)
	}
	env.CreateNamespace(t, "ha-labelled", map[string]string{contract.Inject: contract.NamespaceEnabled})
	waitBundle(t, env, "ha-labelled", roots)
}
