package controller

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/ca"
)

// serviceLister is the CA's ca.ServiceLister over the manager's shared cache:
// the pod informer is the one the injection audit and the trust-bundle
// distributor already use, so the controller holds one copy of every pod.
type serviceLister struct {
	cache client.Reader
	// api reads a pod too new for the cache.
	api client.Reader
}

var _ ca.ServiceLister = (*serviceLister)(nil)

// ServicesForPod returns the Services of namespace whose selector matches the pod.
func (s *serviceLister) ServicesForPod(ctx context.Context, namespace, podName, podUID string) ([]string, error) {
	pod := &corev1.Pod{}
	key := types.NamespacedName{Namespace: namespace, Name: podName}
	err := s.cache.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) || (err == nil && podUID != "" && string(pod.UID) != podUID) {
		err = s.api.Get(ctx, key, pod) // just created: not in the cache yet
	}
	if err != nil {
		return nil, notReady(fmt.Errorf("get pod %s: %w", key, err))
	}
	if podUID != "" && string(pod.UID) != podUID {
		return nil, fmt.Errorf("pod %s has uid %s, the token names %s", key, pod.UID, podUID)
	}
	svcs := &corev1.ServiceList{}
	if err := s.cache.List(ctx, svcs, client.InNamespace(namespace)); err != nil {
		return nil, notReady(fmt.Errorf("list services of %s: %w", namespace, err))
	}
	var names []string
	for _, svc := range svcs.Items {
		if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			names = append(names, svc.Name)
		}
	}
	return names, nil
}

// notReady marks cache start-up errors as ca.ErrNotReady, so the CA answers 503.
func notReady(err error) error {
	var notStarted *cache.ErrCacheNotStarted
	if errors.As(err, &notStarted) {
		return fmt.Errorf("%w: %w", ca.ErrNotReady, err)
	}
	return err
}
