package audit

import (
	"context"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

func TestReconcile(t *testing.T) {
	labelled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{contract.Inject: "enabled"}}}
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	pod := func(ns, name string, ann map[string]string, init ...corev1.Container) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
			Spec: corev1.PodSpec{InitContainers: init, Containers: []corev1.Container{{Name: "app"}}}}
	}
	listens := map[string]string{contract.Inbound: "8443:8080"}
	missed := pod("demo", "missed", listens)
	optInMissed := pod("plain", "optin", map[string]string{contract.Inject: "true", contract.Upstreams: "a.b.svc:1@2"})
	noListeners := pod("demo", "idle", nil) // not injectable: nothing to report
	injected := pod("demo", "ok", nil, corev1.Container{Name: contract.ContainerName})
	optOut := pod("demo", "out", map[string]string{contract.Inject: "false"})
	done := pod("demo", "done", nil)
	done.Status.Phase = corev1.PodSucceeded

	c := fake.NewClientBuilder().WithObjects(labelled, plain, missed, optInMissed, noListeners, injected, optOut, done).Build()
	rec := record.NewFakeRecorder(10)
	r := &Reconciler{Client: c, Recorder: rec, Config: inject.DefaultConfig}
	run := func(p *corev1.Pod) {
		t.Helper()
		if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(p)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*corev1.Pod{missed, optInMissed, noListeners, injected, optOut, done, missed} {
		run(p)
	}
	if n := len(rec.Events); n != 2 {
		t.Fatalf("want 2 events (one per missed pod, not repeated), got %d", n)
	}
	if ev := <-rec.Events; !strings.Contains(ev, "Warning "+EventReason) || !strings.Contains(ev, "namespace-enabled") {
		t.Errorf("event %q", ev)
	}
	if got := gauge(t); got != 2 {
		t.Errorf("gauge = %v, want 2", got)
	}
	// The pod goes away: the gauge follows.
	if err := c.Delete(context.Background(), missed); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "demo", Name: "missed"}}); err != nil {
		t.Fatal(err)
	}
	if got := gauge(t); got != 1 {
		t.Errorf("gauge after delete = %v, want 1", got)
	}
}

func gauge(t *testing.T) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := notInjected.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
