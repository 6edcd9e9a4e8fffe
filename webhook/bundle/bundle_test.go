package bundle

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/contract"
)

const roots = "-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----\n"

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func cm(namespace, data string, labels map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: contract.TrustBundleConfigMap, Labels: labels},
		Data: map[string]string{contract.TrustBundleKey: data}}
}

func TestReconcile(t *testing.T) {
	enabled := map[string]string{contract.Inject: contract.NamespaceEnabled}
	injectedPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "optin", Name: "p",
		Annotations: map[string]string{contract.Status: "{}"}}}
	plainPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "plain", Name: "p"}}
	tests := []struct {
		name    string
		objs    []client.Object
		ns      string
		wantCM  bool
		wantCA  string
		managed bool
	}{
		{name: "labelled namespace gets the bundle", objs: []client.Object{ns("demo", enabled)}, ns: "demo", wantCM: true, wantCA: roots, managed: true},
		{name: "namespace with an injected pod", objs: []client.Object{ns("optin", nil), injectedPod}, ns: "optin", wantCM: true, wantCA: roots, managed: true},
		{name: "plain namespace left alone", objs: []client.Object{ns("plain", nil), plainPod}, ns: "plain"},
		{name: "stale bundle updated", objs: []client.Object{ns("demo", enabled), cm("demo", "OLD", map[string]string{contract.ManagedByLabel: contract.ManagedByValue})}, ns: "demo", wantCM: true, wantCA: roots, managed: true},
		// Before podtls-controller became the one managed-by value, ConfigMaps said "podtls".
		{name: "ConfigMap of an older podtls adopted", objs: []client.Object{ns("demo", enabled), cm("demo", "OLD", map[string]string{contract.ManagedByLabel: "podtls"})}, ns: "demo", wantCM: true, wantCA: roots, managed: true},
		{name: "hand-made ConfigMap adopted", objs: []client.Object{ns("demo", enabled), cm("demo", "MINE", nil)}, ns: "demo", wantCM: true, wantCA: roots, managed: true},
		{name: "unlabelled namespace keeps its old ConfigMap", objs: []client.Object{ns("gone", nil), cm("gone", "OLD", nil)}, ns: "gone", wantCM: true, wantCA: "OLD"},
		{name: "excluded namespace", objs: []client.Object{ns("kube-system", enabled)}, ns: "kube-system"},
		{name: "namespace deleted", ns: "nothing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithObjects(tt.objs...).Build()
			// The cache holds only labelled ConfigMaps; the fake sees all of them,
			// so hide unlabelled ones from "Client" reads to exercise adoption.
			d := &Distributor{Client: labelledOnly{c}, APIReader: c, Bundle: func() []byte { return []byte(roots) }, Excluded: contract.SystemNamespaces}
			if _, err := d.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: tt.ns}}); err != nil {
				t.Fatal(err)
			}
			got := &corev1.ConfigMap{}
			err := c.Get(context.Background(), types.NamespacedName{Namespace: tt.ns, Name: contract.TrustBundleConfigMap}, got)
			if !tt.wantCM {
				if !apierrors.IsNotFound(err) {
					t.Fatalf("want no ConfigMap, got %v %v", got.Data, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Data[contract.TrustBundleKey] != tt.wantCA {
				t.Errorf("ca.crt = %q, want %q", got.Data[contract.TrustBundleKey], tt.wantCA)
			}
			if (got.Labels[contract.ManagedByLabel] == contract.ManagedByValue) != tt.managed {
				t.Errorf("labels %v", got.Labels)
			}
		})
	}
}

// labelledOnly mimics the manager's cache, which only holds ConfigMaps with contract.ManagedByLabel.
type labelledOnly struct{ client.Client }

func (l labelledOnly) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := l.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Labels[contract.ManagedByLabel] != contract.ManagedByValue {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	return nil
}
