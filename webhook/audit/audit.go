// Package audit finds pods that should carry the podtls sidecar but do not:
// for example pods admitted while the controller was down, under the opt-in
// webhook's failurePolicy Ignore. It reports each with a Warning Event on the
// pod and counts them in a gauge, which makes Ignore safe to use.
package audit

import (
	"context"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

// EventReason is the reason of the Warning Event on an uninjected pod.
const EventReason = contract.EventNotInjected

var notInjected = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "podtls_pods_not_injected",
	Help: "Running pods that ask for the podtls sidecar but were admitted without it (recreate them to inject).",
})

func init() { metrics.Registry.MustRegister(notInjected) }

// Reconciler checks every pod with the same Decide the webhook uses.
// RBAC: pods and namespaces get/list/watch; events create/patch.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Config returns the current injection config (for Decide's namespace rules).
	Config func() inject.Config

	mu      sync.Mutex
	missing map[types.NamespacedName]bool
}

// SetupWithManager registers the reconciler on pods, and on namespaces whose
// podtls.io/inject label changes (labelling a namespace leaves its existing
// pods without the sidecar until they are recreated).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	podsOf := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		pods := &corev1.PodList{}
		if err := r.Client.List(ctx, pods, client.InNamespace(o.GetName())); err != nil {
			logf.FromContext(ctx).Error(err, "list pods of namespace", "namespace", o.GetName())
			return nil
		}
		reqs := make([]reconcile.Request, len(pods.Items))
		for i := range pods.Items {
			reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])}
		}
		return reqs
	})
	labelChanged := predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetLabels()[contract.Inject] != e.ObjectNew.GetLabels()[contract.Inject]
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	return ctrl.NewControllerManagedBy(mgr).Named("injection-audit").
		For(&corev1.Pod{}).
		Watches(&corev1.Namespace{}, podsOf, builder.WithPredicates(labelChanged)).
		Complete(r)
}

// Reconcile reports a pod that Decide would inject but that has no sidecar.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		r.set(req.NamespacedName, false)
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		r.set(req.NamespacedName, false)
		return reconcile.Result{}, nil
	}
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: pod.Namespace}, ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	d := inject.Decide(pod, ns, r.Config())
	missing := d.Inject
	if missing && r.set(req.NamespacedName, true) {
		reasons := make([]string, len(d.Reasons))
		for i, c := range d.Reasons {
			reasons[i] = string(c)
		}
		r.Recorder.Eventf(pod, corev1.EventTypeWarning, EventReason,
			"pod asks for the podtls sidecar (%s) but was admitted without it, probably while the webhook was unavailable; recreate it",
			strings.Join(reasons, ","))
		logf.FromContext(ctx).Info("pod admitted without sidecar", "pod", req.NamespacedName.String(), "reasons", reasons)
	}
	if !missing {
		r.set(req.NamespacedName, false)
	}
	return reconcile.Result{}, nil
}

// set records whether a pod is missing its sidecar and reports whether that is new.
func (r *Reconciler) set(key types.NamespacedName, missing bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missing == nil {
		r.missing = map[types.NamespacedName]bool{}
	}
	was := r.missing[key]
	if missing {
		r.missing[key] = true
	} else {
		delete(r.missing, key)
	}
	notInjected.Set(float64(len(r.missing)))
	return missing && !was
}
