package rollout

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
)

// Events on the workloads rollout restarts.
const (
	EventRestarted     = "PodtlsRestarted"
	EventRestartFailed = "PodtlsRestartFailed"
)

var restarts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "podtls_app_restarts_total",
	Help: "Rolling restarts of workloads for a new external certificate (podtls.io/app-cert-reload: restart), by kind and result.",
}, []string{"kind", "result"})

func init() { metrics.Registry.MustRegister(restarts) }

// Reconciler rolls the workloads of one external-certificate Secret at a
// time. Only the leader runs it; the state below is the leader's memory of
// the rollout in flight, rebuilt from the workloads after a failover.
type Reconciler struct {
	Client   client.Client // cached: the ACME manager's Secrets and pods
	API      client.Reader // live: ReplicaSets and workloads
	Recorder record.EventRecorder
	// MinInterval separates two restarts (default 30s); MaxWait bounds the
	// wait for one rollout to finish before the next may start (10m).
	MinInterval, MaxWait time.Duration
	Now                  func() time.Time

	mu       sync.Mutex
	inflight *Workload
	started  time.Time
	warned   map[Workload]string // OnDelete StatefulSets told about a serial
}

// SetupWithManager watches the ACME manager's Secrets and the pods that
// asked for restarts.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.MinInterval == 0 {
		r.MinInterval = 30 * time.Second
	}
	if r.MaxWait == 0 {
		r.MaxWait = 10 * time.Minute
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	isCert := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[contract.ComponentLabel] == status.ComponentExternalCert
	})
	podToSecret := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if s := o.GetAnnotations()[contract.ExternalSecret]; s != "" && wantsRestart(o.GetAnnotations()) {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: s}}}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).Named("app-restarts").
		For(&corev1.Secret{}, builder.WithPredicates(isCert)).
		Watches(&corev1.Pod{}, podToSecret).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

func wantsRestart(a map[string]string) bool {
	v, ok := a[contract.AppCertReload]
	if !ok {
		return false
	}
	rl, err := contract.ParseReload(v)
	return err == nil && rl.Action == contract.ReloadRestart
}

// Reconcile implements reconcile.Reconciler for one Secret.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	secret := &corev1.Secret{}
	if err := r.Client.Get(ctx, req.NamespacedName, secret); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	st, _ := status.Decode(secret.Annotations) // a malformed field is left zero
	cert := Certificate{Serial: st.Serial, Stored: st.LastSuccess}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(req.Namespace)); err != nil {
		return reconcile.Result{}, fmt.Errorf("list pods: %w", err)
	}
	var planned []Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Annotations[contract.ExternalSecret] != req.Name || !wantsRestart(p.Annotations) || p.DeletionTimestamp != nil {
			continue
		}
		owner, err := ownerOf(ctx, r.API, p)
		if err != nil {
			return reconcile.Result{}, err
		}
		planned = append(planned, Pod{Name: p.Name, Created: p.CreationTimestamp.Time, Owner: owner, RestartedFor: p.Annotations[contract.RestartedFor]})
	}
	todo := Plan(cert, planned)
	if len(todo) == 0 {
		return reconcile.Result{}, nil
	}
	for _, w := range todo {
		obj, err := object(w)
		if err != nil {
			return reconcile.Result{}, err
		}
		if err := r.API.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: w.Name}, obj); err != nil {
			if client.IgnoreNotFound(err) == nil {
				continue
			}
			return reconcile.Result{}, err
		}
		if sts, ok := obj.(*appsv1.StatefulSet); ok && sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
			if r.warnOnce(w, cert.Serial) {
				r.Recorder.Eventf(obj, corev1.EventTypeWarning, EventRestartFailed,
					"certificate %s of Secret %s is new, but updateStrategy OnDelete keeps the pods: delete them to load it", cert.Serial, req.Name)
				restarts.WithLabelValues(w.Kind, "on-delete").Inc()
			}
			continue
		}
		if templateAnnotation(obj) == cert.Serial {
			// Restarted for this certificate already (maybe by the previous
			// leader): wait while its rollout runs, then look at the next.
			if done, err := rolledOut(ctx, r.API, w); err != nil || !done {
				r.track(w)
				return reconcile.Result{RequeueAfter: 5 * time.Second}, err
			}
			continue
		}
		if wait := r.busy(ctx); wait > 0 {
			return reconcile.Result{RequeueAfter: wait}, nil
		}
		if err := restart(ctx, r.Client, w, cert.Serial); err != nil {
			r.Recorder.Eventf(obj, corev1.EventTypeWarning, EventRestartFailed, "restart for certificate %s of Secret %s: %v", cert.Serial, req.Name, err)
			restarts.WithLabelValues(w.Kind, "failure").Inc()
			return reconcile.Result{}, err
		}
		r.track(w)
		r.Recorder.Eventf(obj, corev1.EventTypeNormal, EventRestarted,
			"rolling restart: the app loads its certificate at start, and Secret %s holds a new one (serial %s)", req.Name, cert.Serial)
		restarts.WithLabelValues(w.Kind, "success").Inc()
		log.Info("workload restarted for a new external certificate", "workload", w.String(), "secret", req.Name, "serial", cert.Serial)
		return reconcile.Result{RequeueAfter: r.MinInterval}, nil
	}
	return reconcile.Result{}, nil
}

// warnOnce reports whether w has not been warned about serial yet.
func (r *Reconciler) warnOnce(w Workload, serial string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.warned == nil {
		r.warned = map[Workload]string{}
	}
	if r.warned[w] == serial {
		return false
	}
	r.warned[w] = serial
	return true
}

// busy returns how long to wait before the next restart: while a rollout
// is in flight (up to MaxWait) and for MinInterval after one started.
func (r *Reconciler) busy(ctx context.Context) time.Duration {
	r.mu.Lock()
	w, started := r.inflight, r.started
	r.mu.Unlock()
	if w == nil {
		return 0
	}
	now := r.Now()
	if d := started.Add(r.MinInterval).Sub(now); d > 0 {
		return d
	}
	done, err := rolledOut(ctx, r.API, *w)
	if err != nil {
		logf.FromContext(ctx).Info("rollout state unknown", "workload", w.String(), "error", err.Error())
	}
	if !done && now.Sub(started) < r.MaxWait {
		return 5 * time.Second
	}
	r.mu.Lock()
	r.inflight = nil
	r.mu.Unlock()
	return 0
}

func (r *Reconciler) track(w Workload) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight == nil || *r.inflight != w {
		r.inflight, r.started = &w, r.Now()
	}
}

func templateAnnotation(obj client.Object) string {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return o.Spec.Template.Annotations[contract.RestartedFor]
	case *appsv1.StatefulSet:
		return o.Spec.Template.Annotations[contract.RestartedFor]
	case *appsv1.DaemonSet:
		return o.Spec.Template.Annotations[contract.RestartedFor]
	}
	return ""
}
