package bundle_test

import (
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook/bundle"
)

// TestRootsChangedEnvtest: a signal on RootsChanged rewrites the ConfigMap
// of every namespace that has one within seconds, not at the next Resync.
func TestRootsChangedEnvtest(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	for _, ns := range []string{"shop", "pay"} {
		env.CreateNamespace(t, ns, map[string]string{contract.Inject: contract.NamespaceEnabled})
	}
	mgr, err := manager.New(env.Config, manager.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Label: labels.SelectorFromSet(labels.Set{contract.ManagedByLabel: contract.ManagedByValue})},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	var roots atomic.Value
	roots.Store("-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n")
	changed := make(chan struct{}, 1)
	d := &bundle.Distributor{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Excluded: contract.SystemNamespaces,
		Bundle: func() []byte { return []byte(roots.Load().(string)) }, RootsChanged: changed}
	if err := d.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	holds := func(want string) func() (bool, string) {
		return func() (bool, string) {
			for _, ns := range []string{"shop", "pay"} {
				cm, err := env.Clientset.CoreV1().ConfigMaps(ns).Get(ctx, contract.TrustBundleConfigMap, metav1.GetOptions{})
				if err != nil || cm.Data[contract.TrustBundleKey] != want {
					return false, ns + " not yet"
				}
			}
			return true, ""
		}
	}
	poll.Eventually(t, 30*time.Second, "the first bundles", holds(roots.Load().(string)))
	next := "-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nnext\n-----END CERTIFICATE-----\n"
	roots.Store(next)
	changed <- struct{}{}
	// Resync is 5 minutes: only the signal can do it this fast.
	poll.Eventually(t, 15*time.Second, "every bundle with the next root after the signal", holds(next))
}
