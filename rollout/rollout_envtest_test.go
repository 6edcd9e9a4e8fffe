package rollout

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
)

const ns = "shop"

// deployment creates a Deployment, its ReplicaSet and one pod that asked
// for restarts with the external certificate of Secret "ext".
func deployment(t *testing.T, c client.Client, name string) (*appsv1.Deployment, *corev1.Pod) {
	t.Helper()
	ctx := t.Context()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}}}
	if err := c.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: d.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template}}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1-a", Labels: labels,
		Annotations:     map[string]string{contract.ExternalSecret: "ext", contract.AppCertReload: "restart"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}},
		Spec: d.Spec.Template.Spec}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return d, pod
}

func restartedFor(t *testing.T, c client.Client, name string) (string, int64) {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Annotations[contract.RestartedFor], d.Generation
}

// TestRestarts runs the reconciler against a real API server: a new
// certificate rolls each workload whose pods are older, once, one at a
// time; pods newer than the certificate are left alone.
func TestRestarts(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace(t, ns, nil)
	ctx := t.Context()
	c := env.Client

	_, webPod := deployment(t, c, "web")
	deployment(t, c, "api")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ext",
		Labels: map[string]string{contract.ManagedByLabel: contract.ManagedByValue, contract.ComponentLabel: status.ComponentExternalCert}}}
	if err := c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// The certificate was stored after the pods were created.
	setCert := func(serial string, stored time.Time) {
		t.Helper()
		patch := client.MergeFrom(secret.DeepCopy())
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[status.Serial] = serial
		secret.Annotations[status.LastSuccess] = stored.UTC().Format(time.RFC3339)
		if err := c.Patch(ctx, secret, patch); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	rec := record.NewFakeRecorder(10)
	r := &Reconciler{Client: c, API: c, Recorder: rec, MinInterval: time.Minute, MaxWait: 10 * time.Minute, Now: func() time.Time { return now }}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "ext"}}
	run := func() reconcile.Result {
		t.Helper()
		res, err := r.Reconcile(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	// No certificate yet: nothing.
	run()
	if v, _ := restartedFor(t, c, "web"); v != "" {
		t.Fatalf("restarted before any certificate: %q", v)
	}

	setCert("aa01", webPod.CreationTimestamp.Add(2*time.Second))
	run()
	api, apiGen := restartedFor(t, c, "api")
	web, _ := restartedFor(t, c, "web")
	if api != "aa01" || web != "" {
		t.Fatalf("first pass: api %q, web %q; want api only (one workload at a time, sorted)", api, web)
	}
	if ev := <-rec.Events; !strings.Contains(ev, EventRestarted) || !strings.Contains(ev, "aa01") {
		t.Fatalf("event %q", ev)
	}

	// The rollout of api is not done (no controller-manager here): web waits.
	now = now.Add(2 * time.Minute)
	if res := run(); res.RequeueAfter == 0 {
		t.Fatal("no requeue while a rollout is in flight")
	}
	if web, _ := restartedFor(t, c, "web"); web != "" {
		t.Fatal("two workloads rolled at once")
	}
	// api reports its rollout done: web is next, api is not patched again.
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "api"}, d); err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1}
	if err := c.Status().Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	run()
	if web, _ := restartedFor(t, c, "web"); web != "aa01" {
		t.Fatalf("web %q after api finished", web)
	}
	if _, gen := restartedFor(t, c, "api"); gen != apiGen {
		t.Fatalf("api patched again (generation %d -> %d)", apiGen, gen)
	}

	// The old pods are still there (nothing deletes them in envtest), but
	// both templates carry the serial: further passes change nothing.
	now = now.Add(time.Hour)
	for range 3 {
		run()
	}
	for _, name := range []string{"api", "web"} {
		if v, _ := restartedFor(t, c, name); v != "aa01" {
			t.Fatalf("%s: %q", name, v)
		}
	}
	if ev := <-rec.Events; !strings.Contains(ev, EventRestarted) || !strings.Contains(ev, "web") && !strings.Contains(ev, "aa01") {
		t.Fatalf("event %q", ev)
	}
	select {
	case ev := <-rec.Events:
		t.Fatalf("extra event %q", ev)
	default:
	}

	// A renewal stored before a pod was created: that pod started with it
	// and is left alone, while the older ones roll for the new serial.
	// (Creation times have one-second resolution: let two seconds pass.)
	time.Sleep(time.Until(webPod.CreationTimestamp.Add(2100 * time.Millisecond)))
	_, freshPod := deployment(t, c, "fresh")
	setCert("bb02", freshPod.CreationTimestamp.Add(-time.Second))
	now = now.Add(time.Hour)
	run()
	if v, _ := restartedFor(t, c, "fresh"); v != "" {
		t.Fatalf("fresh restarted for a certificate older than its pods: %q", v)
	}
	if v, _ := restartedFor(t, c, "api"); v != "bb02" {
		t.Fatalf("api not rolled for the renewal: %q", v)
	}
}
