package ca

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

var podsResource = corev1.SchemeGroupVersion.WithResource("pods")

// ServiceIndex is the informer-backed ServiceLister: it caches every Service
// (selector only) and the metadata of every pod (labels only), cluster-wide,
// so finding the Services of a calling pod costs no API call. A pod missing
// from the cache (just created) is fetched once with a metadata GET.
//
// It is a controller-runtime manager.Runnable that does not need leader
// election: every replica serves the sign API.
//
// RBAC: list and watch services and pods (pods as metadata), get pods.
type ServiceIndex struct {
	md       metadata.Interface
	services cache.SharedIndexInformer
	pods     cache.SharedIndexInformer
	synced   atomic.Bool
	started  sync.Once
}

// NewServiceIndex builds the index; call Start to fill it.
func NewServiceIndex(kube kubernetes.Interface, md metadata.Interface) *ServiceIndex {
	s := &ServiceIndex{md: md}
	s.services = coreinformers.NewServiceInformer(kube, metav1.NamespaceAll, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	s.pods = metadatainformer.NewFilteredMetadataInformer(md, podsResource, metav1.NamespaceAll, 0,
		cache.Indexers{}, nil).Informer()
	// Keep only what matching needs: memory stays small in big clusters.
	_ = s.services.SetTransform(trimService)
	_ = s.pods.SetTransform(trimPodMeta)
	return s
}

func trimService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, UID: svc.UID, ResourceVersion: svc.ResourceVersion},
		Spec:       corev1.ServiceSpec{Selector: svc.Spec.Selector},
	}, nil
}

func trimPodMeta(obj any) (any, error) {
	p, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion, Labels: p.Labels},
	}, nil
}

// Start runs the informers until ctx ends. It returns an error if the caches
// cannot sync.
func (s *ServiceIndex) Start(ctx context.Context) error {
	ran := false
	s.started.Do(func() { ran = true })
	if !ran {
		return fmt.Errorf("service index: already started")
	}
	go s.services.Run(ctx.Done())
	go s.pods.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.services.HasSynced, s.pods.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("service index: caches did not sync")
	}
	s.synced.Store(true)
	<-ctx.Done()
	return nil
}

// NeedLeaderElection tells controller-runtime to run the index on every replica.
func (s *ServiceIndex) NeedLeaderElection() bool { return false }

// Synced reports whether the caches are filled.
func (s *ServiceIndex) Synced() bool { return s.synced.Load() }

// ServicesForPod implements ServiceLister.
func (s *ServiceIndex) ServicesForPod(ctx context.Context, namespace, podName, podUID string) ([]string, error) {
	if !s.synced.Load() {
		return nil, fmt.Errorf("%w: service and pod caches have not synced yet", ErrNotReady)
	}
	podLabels, ok, err := s.podLabels(ctx, namespace, podName, podUID)
	if err != nil || !ok {
		return nil, err
	}
	objs, err := s.services.GetIndexer().ByIndex(cache.NamespaceIndex, namespace)
	if err != nil {
		return nil, fmt.Errorf("list cached services of %s: %w", namespace, err)
	}
	return matchingServices(objs, podLabels), nil
}

// podLabels returns the labels of the pod, from the cache or, on a miss or a
// UID mismatch, from the API server. ok is false if the pod does not exist.
func (s *ServiceIndex) podLabels(ctx context.Context, namespace, name, uid string) (labels.Set, bool, error) {
	obj, exists, err := s.pods.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, false, fmt.Errorf("cached pod %s/%s: %w", namespace, name, err)
	}
	if exists {
		if p, ok := obj.(*metav1.PartialObjectMetadata); ok && (uid == "" || string(p.UID) == uid) {
			return p.Labels, true, nil
		}
	}
	p, err := s.md.Resource(podsResource).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: get pod %s/%s: %w", ErrNotReady, namespace, name, err)
	}
	if uid != "" && string(p.UID) != uid {
		return nil, false, nil
	}
	return p.Labels, true, nil
}

// matchingServices returns the sorted names of the Services among objs whose
// non-empty selector matches podLabels.
func matchingServices(objs []any, podLabels labels.Set) []string {
	var names []string
	for _, o := range objs {
		svc, ok := o.(*corev1.Service)
		if !ok || len(svc.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(podLabels) {
			names = append(names, svc.Name)
		}
	}
	slices.Sort(names)
	return names
}
