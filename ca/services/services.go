// Package services finds the Services that select a pod, for the CA's DNS
// names, from a controller-runtime cache. It is its own package so that the
// CA core (and the podtls CLI, which reads CA material) links no
// controller-runtime.
package services

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/ca"
)

// Lister is the ca.ServiceLister over a controller-runtime cache: in
// podtls-controller the manager's shared cache, whose pod informer the
// injection audit and the trust-bundle distributor already use, so the
// controller holds one copy of every pod. Finding the Services of a calling
// pod costs no API call, except one GET for a pod too new for the cache.
//
// RBAC: list and watch services and pods, get pods.
type Lister struct {
	// Cache holds Services and pods.
	Cache client.Reader
	// API reads a pod too new for the cache.
	API client.Reader
}

var _ ca.ServiceLister = (*Lister)(nil)

// ServicesForPod returns the Services of namespace whose selector matches the pod.
func (s *Lister) ServicesForPod(ctx context.Context, namespace, podName, podUID string) ([]string, error) {
	pod := &corev1.Pod{}
	key := types.NamespacedName{Namespace: namespace, Name: podName}
	err := s.Cache.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) || (err == nil && podUID != "" && string(pod.UID) != podUID) {
		err = s.API.Get(ctx, key, pod) // just created: not in the cache yet
	}
	if err != nil {
		return nil, notReady(fmt.Errorf("get pod %s: %w", key, err))
	}
	if podUID != "" && string(pod.UID) != podUID {
		return nil, fmt.Errorf("pod %s has uid %s, the token names %s", key, pod.UID, podUID)
	}
	svcs := &corev1.ServiceList{}
	if err := s.Cache.List(ctx, svcs, client.InNamespace(namespace)); err != nil {
		return nil, notReady(fmt.Errorf("list services of %s: %w", namespace, err))
	}
	return matchingServices(svcs.Items, labels.Set(pod.Labels)), nil
}

// matchingServices returns the sorted names of the Services whose selector
// matches podLabels. A Service without a selector (endpoints managed by hand)
// never matches.
func matchingServices(svcs []corev1.Service, podLabels labels.Set) []string {
	var names []string
	for _, svc := range svcs {
		if len(svc.Spec.Selector) > 0 && labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(podLabels) {
			names = append(names, svc.Name)
		}
	}
	slices.Sort(names)
	return names
}

// notReady marks cache start-up errors as ca.ErrNotReady, so the CA answers 503.
func notReady(err error) error {
	var notStarted *cache.ErrCacheNotStarted
	if errors.As(err, &notStarted) {
		return fmt.Errorf("%w: %w", ca.ErrNotReady, err)
	}
	return err
}
