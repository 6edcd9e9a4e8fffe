// Package services tells the CA what the cluster says about a calling pod
// (the Services that select it, which of them are headless, its hostname and
// subdomain), from a controller-runtime cache. It is its own package so that
// the CA core (and the podtls CLI, which reads CA material) links no
// controller-runtime. It reports facts only; the CA's policy decides which
// names they grant.
package services

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/ca"
)

// Lister is the ca.PodLookup over a controller-runtime cache: in
// podtls-controller the manager's shared cache, whose pod informer the
// injection audit and the trust-bundle distributor already use, so the
// controller holds one copy of every pod. Looking up a calling pod costs no
// API call, except one GET for a pod too new for the cache.
//
// RBAC: list and watch services and pods, get pods.
type Lister struct {
	// Cache holds Services and pods.
	Cache client.Reader
	// API reads a pod too new for the cache.
	API client.Reader
}

var _ ca.PodLookup = (*Lister)(nil)

// LookupPod returns the facts of a pod: the Services of namespace whose
// selector matches it, which of them are headless, and its hostname and
// subdomain.
func (s *Lister) LookupPod(ctx context.Context, namespace, podName, podUID string) (ca.PodFacts, error) {
	pod := &corev1.Pod{}
	key := types.NamespacedName{Namespace: namespace, Name: podName}
	err := s.Cache.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) || (err == nil && podUID != "" && string(pod.UID) != podUID) {
		err = s.API.Get(ctx, key, pod) // just created: not in the cache yet
	}
	if err != nil {
		return ca.PodFacts{}, notReady(fmt.Errorf("get pod %s: %w", key, err))
	}
	if podUID != "" && string(pod.UID) != podUID {
		return ca.PodFacts{}, fmt.Errorf("pod %s has uid %s, the token names %s", key, pod.UID, podUID)
	}
	svcs := &corev1.ServiceList{}
	if err := s.Cache.List(ctx, svcs, client.InNamespace(namespace)); err != nil {
		return ca.PodFacts{}, notReady(fmt.Errorf("list services of %s: %w", namespace, err))
	}
	return podFacts(pod, svcs.Items), nil
}

// podFacts is what pod and the Services of its namespace say about its names.
func podFacts(pod *corev1.Pod, svcs []corev1.Service) ca.PodFacts {
	f := ca.PodFacts{Hostname: pod.Spec.Hostname, Subdomain: pod.Spec.Subdomain}
	for _, svc := range matchingServices(svcs, labels.Set(pod.Labels)) {
		f.Services = append(f.Services, svc.Name)
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			f.Headless = append(f.Headless, svc.Name)
		}
	}
	return f
}

// matchingServices returns the Services whose selector matches podLabels,
// sorted by name. A Service without a selector (endpoints managed by hand)
// never matches.
func matchingServices(svcs []corev1.Service, podLabels labels.Set) []corev1.Service {
	var out []corev1.Service
	for _, svc := range svcs {
		if len(svc.Spec.Selector) > 0 && labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(podLabels) {
			out = append(out, svc)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// notReady marks cache start-up errors as ca.ErrNotReady, so the CA answers 503.
func notReady(err error) error {
	var notStarted *cache.ErrCacheNotStarted
	if errors.As(err, &notStarted) {
		return fmt.Errorf("%w: %w", ca.ErrNotReady, err)
	}
	return err
}
