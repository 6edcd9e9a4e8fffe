package reconciler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
)

func defaultRand() float64 { return rand.Float64() }

// SecretSelector is the label set of every Secret the manager writes; the
// controller restricts its Secret cache to it.
func SecretSelector() map[string]string {
	return map[string]string{contract.ManagedByLabel: contract.ManagedByValue, contract.ComponentLabel: status.ComponentExternalCert}
}

// managed reports whether the manager owns s.
func managed(s *corev1.Secret) bool {
	for k, v := range SecretSelector() {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}

// SetupWithManager registers the manager's controllers and runnables. The
// controllers and the resyncer need leader election (controllers do by
// default), so only the leader orders or writes; the config watcher runs on
// every replica and writes nothing.
func (m *Manager) SetupWithManager(mgr ctrl.Manager) error {
	m.client, m.api = mgr.GetClient(), mgr.GetAPIReader()
	if m.opts.Recorder == nil {
		m.opts.Recorder = mgr.GetEventRecorderFor("podtls-controller")
	}
	m.recorder = m.opts.Recorder
	if m.opts.Logger.GetSink() == nil {
		m.opts.Logger = mgr.GetLogger()
	}
	m.log = m.opts.Logger.WithName("acme")

	hasHosts := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := o.GetAnnotations()[contract.ExternalHosts]
		return ok && o.GetAnnotations()[contract.Status] != ""
	})
	if m.opts.ConfigFile == "" {
		configOK.Set(0)
		return ctrl.NewControllerManagedBy(mgr).Named("acme-disabled").
			For(&corev1.Pod{}, builder.WithPredicates(hasHosts, noDeletes())).
			Complete(reconcile.Func(m.reconcileDisabled))
	}
	if m.opts.ParseConfig == nil || m.opts.NewIssuer == nil {
		return fmt.Errorf("acme manager: ParseConfig and NewIssuer are required with a config file")
	}
	m.config = &configWatcher{
		path: m.opts.ConfigFile, parse: m.opts.ParseConfig, build: m.opts.NewIssuer,
		interval: m.opts.ConfigPollInterval, log: m.log, changed: m.requeueAll,
	}

	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, secretIndex, func(o client.Object) []string {
		return indexPod(o)
	}); err != nil {
		return fmt.Errorf("index pods by %s: %w", secretIndex, err)
	}
	podToSecret := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if name := o.GetAnnotations()[contract.ExternalSecret]; name != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
		}
		return nil
	})
	isManaged := predicate.NewPredicateFuncs(func(o client.Object) bool {
		s, ok := o.(*corev1.Secret)
		return ok && managed(s)
	})
	fromChannel := source.Channel(m.requeue, handler.TypedFuncs[types.NamespacedName, reconcile.Request]{
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[types.NamespacedName], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			q.Add(reconcile.Request{NamespacedName: e.Object})
		},
	})
	if err := ctrl.NewControllerManagedBy(mgr).Named("acme-certificates").
		For(&corev1.Secret{}, builder.WithPredicates(isManaged)).
		Watches(&corev1.Pod{}, podToSecret).
		WatchesRawSource(fromChannel).
		WithOptions(controller.Options{MaxConcurrentReconciles: m.opts.MaxConcurrentReconciles}).
		Complete(m.reconciler()); err != nil {
		return fmt.Errorf("acme controller: %w", err)
	}
	if err := mgr.Add(m.config); err != nil {
		return fmt.Errorf("acme config watcher: %w", err)
	}
	return mgr.Add(&resyncer{m: m})
}

// reconciler is m, or m reporting each reconcile to the reconciling test
// seam when one is set.
func (m *Manager) reconciler() reconcile.Reconciler {
	if m.opts.reconciling == nil {
		return m
	}
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		defer m.opts.reconciling(req.NamespacedName)()
		return m.Reconcile(ctx, req)
	})
}

// noDeletes passes every event but deletions: a deleted pod needs no notice.
func noDeletes() predicate.Funcs {
	return predicate.Funcs{DeleteFunc: func(event.DeleteEvent) bool { return false }}
}

// reconcileDisabled tells a pod asking for external hosts that ACME is off.
func (m *Manager) reconcileDisabled(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &corev1.Pod{}
	if err := m.client.Get(ctx, req.NamespacedName, pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp == nil {
		m.notifyOnce(pod, corev1.EventTypeWarning, status.EventNotConfigured,
			fmt.Sprintf("pod asks for %s but podtls-controller runs without an ACME issuer (--acme-config): no certificate will be issued", contract.ExternalHosts))
	}
	return reconcile.Result{}, nil
}

// requeueAll asks the resyncer for a full pass (non-blocking).
func (m *Manager) requeueAll() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// resyncer enqueues every key periodically and on request.
type resyncer struct{ m *Manager }

func (r *resyncer) NeedLeaderElection() bool { return true }

func (r *resyncer) Start(ctx context.Context) error {
	t := time.NewTicker(r.m.opts.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.m.kick:
		}
		if r.m.opts.resyncing != nil {
			r.m.opts.resyncing()
		}
		if err := r.m.enqueueAll(ctx); err != nil {
			r.m.log.Error(err, "resync")
		}
		r.m.pruneNotified()
	}
}

// enqueueAll queues every managed Secret and every Secret a pod names.
func (m *Manager) enqueueAll(ctx context.Context) error {
	keys := map[types.NamespacedName]bool{}
	secrets := &corev1.SecretList{}
	if err := m.client.List(ctx, secrets, client.MatchingLabels(SecretSelector())); err != nil {
		return fmt.Errorf("list managed secrets: %w", err)
	}
	for _, s := range secrets.Items {
		keys[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = true
	}
	pods := &corev1.PodList{}
	if err := m.client.List(ctx, pods); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods.Items {
		if name := p.Annotations[contract.ExternalSecret]; name != "" {
			keys[types.NamespacedName{Namespace: p.Namespace, Name: name}] = true
		}
	}
	for k := range keys {
		select {
		case m.requeue <- event.TypedGenericEvent[types.NamespacedName]{Object: k}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// notifyOnce records an Event on pod unless the same one was recorded last.
func (m *Manager) notifyOnce(pod *corev1.Pod, typ, reason, msg string) {
	m.mu.Lock()
	key := reason + "\x00" + msg
	seen := m.notified[pod.UID] == key
	m.notified[pod.UID] = key
	m.mu.Unlock()
	if !seen {
		m.recorder.Event(pod, typ, reason, msg)
	}
}

// notify records an Event on every pod (at most maxEventPods of them) and
// remembers it, so a later once-only notice is not taken for a repeat.
func (m *Manager) notify(pods []*corev1.Pod, typ, reason, msg string) {
	m.mu.Lock()
	for _, p := range pods {
		m.notified[p.UID] = reason + "\x00" + msg
	}
	m.mu.Unlock()
	for i, p := range pods {
		if i == maxEventPods {
			break
		}
		m.recorder.Event(p, typ, reason, msg)
	}
}

// maxEventPods bounds the Events of one attempt (a Deployment with many
// replicas shares one Secret).
const maxEventPods = 50

// pruneNotified forgets the notices when the map grows large (deleted pods
// are not tracked): at worst a notice is recorded once more.
func (m *Manager) pruneNotified() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.notified) > 10000 {
		clear(m.notified)
	}
}
