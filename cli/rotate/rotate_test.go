package rotate

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
)

// TestRotateEnvtest walks a rotation against a real API server: the CA
// Secret as the controller creates it, a trust-bundle ConfigMap the test
// updates as the controller would, and one running injected pod whose
// sidecar's /certs answer (through the AdminGetter, the pod proxy in
// production) says which intermediate signed its leaf.
func TestRotateEnvtest(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	kc := env.Clientset
	env.CreateNamespace(t, "podtls-system", nil)
	env.CreateNamespace(t, "demo", nil)
	if _, err := ca.LoadOrCreate(ctx, kc, ca.SecretOptions{Namespace: "podtls-system"}); err != nil {
		t.Fatal(err)
	}
	bundle := func() string {
		sec, err := kc.CoreV1().Secrets("podtls-system").Get(ctx, ca.DefaultSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := ca.MaterialFromSecret(sec)
		if err != nil {
			t.Fatal(err)
		}
		return string(m.TrustBundlePEM())
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: contract.TrustBundleConfigMap},
		Data: map[string]string{contract.TrustBundleKey: bundle()}}
	if _, err := kc.CoreV1().ConfigMaps("demo").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	distribute := func() { // what the controller's distributor does
		cm.Data[contract.TrustBundleKey] = bundle()
		if _, err := kc.CoreV1().ConfigMaps("demo").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web-0"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: contract.ContainerName, Image: "sidecar"}},
		Containers:     []corev1.Container{{Name: "app", Image: "app"}}}}
	pod, err := kc.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	if _, err := kc.CoreV1().Pods("demo").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var served atomic.Value // the pod's leaf's authority key ID
	served.Store("")
	get := func(_ context.Context, ns, name, path string) ([]byte, error) {
		if ns != "demo" || name != "web-0" || path != "/certs" {
			return nil, fmt.Errorf("unexpected %s/%s%s", ns, name, path)
		}
		return []byte(`{"ready":true,"mesh":{"authority_key_id":"` + served.Load().(string) + `"}}`), nil
	}
	o := Options{Namespace: "podtls-system", Secret: ca.DefaultSecretName, AdminGet: get}
	collect := func(t *testing.T, o Options) *Report {
		t.Helper()
		rep, err := Collect(ctx, kc, o)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	rep := collect(t, o)
	served.Store(rep.IntermediateKeyID)
	rep = collect(t, o)
	if rep.Phase != ca.PhaseIdle || rep.Workloads["current"] != 1 || len(rep.Lagging) != 0 {
		t.Fatalf("before: %+v", rep)
	}
	oldKeyID := rep.IntermediateKeyID

	next, err := Publish(ctx, kc, o)
	if err != nil {
		t.Fatal(err)
	}
	rep = collect(t, o)
	if rep.Phase != ca.PhasePublished || rep.Next == nil || rep.Next.SHA256 != next.SHA256 || !slices.Contains(rep.Lagging, "demo") {
		t.Fatalf("after publish: %+v", rep)
	}
	if err := Switch(ctx, kc, o); err == nil || !strings.Contains(err.Error(), "demo") {
		t.Fatalf("switch with a lagging trust bundle: %v", err)
	}
	distribute()
	if err := Switch(ctx, kc, o); err != nil {
		t.Fatal(err)
	}
	rep = collect(t, o)
	if rep.Phase != ca.PhaseSwitched || rep.IntermediateKeyID == oldKeyID || rep.Signing[0].SHA256 != next.SHA256 ||
		rep.Workloads["old"] != 1 || rep.OnOldChain[0] != "demo/web-0" {
		t.Fatalf("after switch: %+v", rep)
	}
	if _, err := Retire(ctx, kc, o); err == nil || !strings.Contains(err.Error(), "demo/web-0") {
		t.Fatalf("retire while a workload is on the old chain: %v", err)
	}
	served.Store(rep.IntermediateKeyID) // the sidecar renewed
	gone, err := Retire(ctx, kc, o)
	if err != nil {
		t.Fatal(err)
	}
	distribute()
	rep = collect(t, o)
	if len(gone) != 1 || gone[0].SHA256 == next.SHA256 || rep.Phase != ca.PhaseIdle || len(rep.Lagging) != 0 {
		t.Fatalf("after retire (gone %+v): %+v", gone, rep)
	}
	sec, _ := kc.CoreV1().Secrets("podtls-system").Get(ctx, ca.DefaultSecretName, metav1.GetOptions{})
	m, err := ca.MaterialFromSecret(sec)
	if err != nil || m.Validate(time.Now()) != nil || hex.EncodeToString(m.Intermediate.SubjectKeyId) != rep.IntermediateKeyID {
		t.Fatalf("the rotated CA Secret does not load: %v", err)
	}
}
