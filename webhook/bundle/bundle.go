// Package bundle keeps the trust-bundle ConfigMap (podtls-trust-bundle, key
// ca.crt) current in every namespace that is labelled podtls.io/inject=enabled
// or holds injected pods. Injected pods mount it (optional) to verify peers.
package bundle

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/podtls/podtls/contract"
)

// Resync is how often every namespace is checked again, which also spreads a
// rotated root (the Bundle function's new value) without a watch on the CA.
const Resync = 5 * time.Minute

// Distributor is the reconciler. RBAC: namespaces get/list/watch; pods
// list/watch; configmaps get/list/watch/create/update.
type Distributor struct {
	Client client.Client
	// APIReader reads around the cache, which only holds ConfigMaps carrying
	// contract.ManagedByLabel: a same-named ConfigMap made by hand (or labelled
	// by an older podtls) is adopted through it.
	APIReader client.Reader
	// Bundle returns the current roots PEM.
	Bundle func() []byte
	// Excluded namespaces never get the ConfigMap (system namespaces).
	Excluded []string
	// RootsChanged, when set, reconciles every namespace at once each time
	// it receives (the CA's refresher signals new roots), instead of at the
	// next Resync: a root rotation's publish reaches the pods in seconds.
	RootsChanged <-chan struct{}
}

// SetupWithManager registers the reconciler: namespaces, injected pods (mapped
// to their namespace) and the ConfigMaps themselves (repaired when
// edited or deleted) all trigger a reconcile of the namespace.
func (d *Distributor) SetupWithManager(mgr ctrl.Manager) error {
	toNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}}}
	})
	// Only a new injected pod can make a namespace want the bundle; pod status
	// updates (frequent) and deletions (the ConfigMap stays) cannot.
	injected := predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			_, ok := e.Object.GetAnnotations()[contract.Status]
			return ok
		},
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == contract.TrustBundleConfigMap })
	b := ctrl.NewControllerManagedBy(mgr).
		Named("trust-bundle").
		For(&corev1.Namespace{}).
		Watches(&corev1.Pod{}, toNamespace, builder.WithPredicates(injected)).
		Watches(&corev1.ConfigMap{}, toNamespace, builder.WithPredicates(ours))
	if d.RootsChanged != nil {
		events := make(chan event.GenericEvent)
		b = b.WatchesRawSource(source.Channel(events, &handler.EnqueueRequestForObject{}))
		// Leader only, like the controller it feeds.
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			return d.fanOut(ctx, mgr.GetClient(), events)
		})); err != nil {
			return err
		}
	}
	return b.Complete(d)
}

// fanOut turns each signal of RootsChanged into one event per namespace.
func (d *Distributor) fanOut(ctx context.Context, c client.Reader, events chan<- event.GenericEvent) error {
	log := logf.FromContext(ctx).WithName("trust-bundle")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.RootsChanged:
		}
		nss := &corev1.NamespaceList{}
		if err := c.List(ctx, nss); err != nil {
			log.Error(err, "list namespaces after a change of the CA roots; the resync catches up")
			continue
		}
		log.Info("CA roots changed: updating every trust bundle", "namespaces", len(nss.Items))
		for i := range nss.Items {
			select {
			case events <- event.GenericEvent{Object: &nss.Items[i]}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// Reconcile makes sure namespace req.Name has the current ConfigMap if it wants one.
func (d *Distributor) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	if slices.Contains(d.Excluded, req.Name) {
		return reconcile.Result{}, nil
	}
	ns := &corev1.Namespace{}
	if err := d.Client.Get(ctx, req.NamespacedName, ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if ns.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	want, err := d.wanted(ctx, ns)
	if err != nil || !want {
		// A namespace that stops wanting the bundle keeps its ConfigMap:
		// running pods may still mount it.
		return reconcile.Result{}, err
	}
	bundle := d.Bundle()
	if len(bundle) == 0 {
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	cm := &corev1.ConfigMap{}
	key := types.NamespacedName{Namespace: ns.Name, Name: contract.TrustBundleConfigMap}
	switch err := d.Client.Get(ctx, key, cm); {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: contract.TrustBundleConfigMap,
				Labels: map[string]string{contract.ManagedByLabel: contract.ManagedByValue}},
			Data: map[string]string{contract.TrustBundleKey: string(bundle)},
		}
		err := d.Client.Create(ctx, cm)
		if apierrors.IsAlreadyExists(err) && d.APIReader != nil {
			return reconcile.Result{RequeueAfter: Resync}, d.adopt(ctx, key, bundle)
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("create trust bundle in %s: %w", ns.Name, err)
		}
		log.Info("trust bundle created", "namespace", ns.Name)
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("get trust bundle in %s: %w", ns.Name, err)
	case !bytes.Equal([]byte(cm.Data[contract.TrustBundleKey]), bundle):
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[contract.TrustBundleKey] = string(bundle)
		if err := d.Client.Update(ctx, cm); err != nil {
			return reconcile.Result{}, fmt.Errorf("update trust bundle in %s: %w", ns.Name, err)
		}
		log.Info("trust bundle updated", "namespace", ns.Name)
	}
	return reconcile.Result{RequeueAfter: Resync}, nil
}

// adopt labels and updates a ConfigMap the cache cannot see.
func (d *Distributor) adopt(ctx context.Context, key types.NamespacedName, bundle []byte) error {
	cm := &corev1.ConfigMap{}
	if err := d.APIReader.Get(ctx, key, cm); err != nil {
		return fmt.Errorf("get unlabelled trust bundle %s: %w", key, err)
	}
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[contract.ManagedByLabel] = contract.ManagedByValue
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[contract.TrustBundleKey] = string(bundle)
	if err := d.Client.Update(ctx, cm); err != nil {
		return fmt.Errorf("adopt trust bundle %s: %w", key, err)
	}
	logf.FromContext(ctx).Info("trust bundle adopted", "namespace", key.Namespace)
	return nil
}

// wanted: the namespace is labelled enabled or holds at least one injected pod.
func (d *Distributor) wanted(ctx context.Context, ns *corev1.Namespace) (bool, error) {
	if ns.Labels[contract.Inject] == contract.NamespaceEnabled {
		return true, nil
	}
	// Full pods, from the same informer the injection audit uses.
	pods := &corev1.PodList{}
	if err := d.Client.List(ctx, pods, client.InNamespace(ns.Name)); err != nil {
		return false, fmt.Errorf("list pods of %s: %w", ns.Name, err)
	}
	return slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool {
		_, ok := p.Annotations[contract.Status]
		return ok
	}), nil
}
