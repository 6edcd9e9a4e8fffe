// Package discovery answers one question for mesh sidecars: which endpoints
// of Service port P may take a request now. Answers come from the
// controller's informer cache (Services and discovery.k8s.io/v1
// EndpointSlices), never from an API call per request, and a caller may
// long-poll for the next change. The wire contract is package discoveryapi;
// Handler serves it on the CA's HTTPS port, authenticated by mesh
// certificate.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/discovery/discoveryapi"
)

// ErrNotFound means the host and port name no Service port of this cluster.
var ErrNotFound = errors.New("not a Service port of this cluster")

// Source reads answers from an informer cache and tells waiters when the
// objects behind a Service's answer change. It is safe for concurrent use.
type Source struct {
	reader client.Reader
	done   <-chan struct{}

	mu      sync.Mutex
	watches map[types.NamespacedName]*watch
}

// watch is the change signal of one Service: closed on the next change.
type watch struct {
	ch   chan struct{}
	refs int
}

// New returns a Source reading c, with event handlers on c's Service and
// EndpointSlice informers (created if need be; call before or after the
// cache starts). When ctx ends, waiting requests are answered at once (pass
// the context whose end stops the HTTPS server, so its shutdown does not
// wait out long polls).
func New(ctx context.Context, c cache.Cache) (*Source, error) {
	s := newSource(ctx, c)
	handlers := map[client.Object]toolscache.ResourceEventHandler{
		&corev1.Service{}:            s.handler(serviceKeys),
		&discoveryv1.EndpointSlice{}: s.handler(sliceKeys),
	}
	for obj, h := range handlers {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("discovery: informer %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("discovery: event handler on %T: %w", obj, err)
		}
	}
	return s, nil
}

func newSource(ctx context.Context, r client.Reader) *Source {
	return &Source{reader: r, done: ctx.Done(), watches: map[types.NamespacedName]*watch{}}
}

// Lookup returns the answer for port of svc, or an error wrapping
// ErrNotFound when svc does not exist, is an ExternalName Service or has no
// such TCP port.
func (s *Source) Lookup(ctx context.Context, svc types.NamespacedName, port int32) (discoveryapi.Endpoints, error) {
	var service corev1.Service
	if err := s.reader.Get(ctx, svc, &service); err != nil {
		if apierrors.IsNotFound(err) {
			return discoveryapi.Endpoints{}, fmt.Errorf("service %s: %w", svc, ErrNotFound)
		}
		return discoveryapi.Endpoints{}, fmt.Errorf("get service %s: %w", svc, err)
	}
	var slices discoveryv1.EndpointSliceList
	if err := s.reader.List(ctx, &slices, client.InNamespace(svc.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return discoveryapi.Endpoints{}, fmt.Errorf("list endpoint slices of %s: %w", svc, err)
	}
	ans, ok := Answer(&service, port, slices.Items)
	if !ok {
		return discoveryapi.Endpoints{}, fmt.Errorf("service %s port %d: %w", svc, port, ErrNotFound)
	}
	return ans, nil
}

// Watch returns a channel closed on the next change of svc or its
// EndpointSlices, and a release function to call when done waiting. Take it
// before Lookup, so a change between the two is not missed.
func (s *Source) Watch(svc types.NamespacedName) (<-chan struct{}, func()) {
	s.mu.Lock()
	w := s.watches[svc]
	if w == nil {
		w = &watch{ch: make(chan struct{})}
		s.watches[svc] = w
	}
	w.refs++
	s.mu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if w.refs--; w.refs == 0 && s.watches[svc] == w {
				delete(s.watches, svc)
			}
		})
	}
}

// Done is closed when the Source's context ends.
func (s *Source) Done() <-chan struct{} { return s.done }

// notify wakes the waiters of svc; later waiters get a fresh channel.
func (s *Source) notify(svc types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.watches[svc]; w != nil {
		close(w.ch)
		delete(s.watches, svc)
	}
}

// handler notifies the Services keys names for every added, updated or
// deleted object.
func (s *Source) handler(keys func(obj any) []types.NamespacedName) toolscache.ResourceEventHandler {
	notify := func(objs ...any) {
		for _, obj := range objs {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			for _, k := range keys(obj) {
				s.notify(k)
			}
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { notify(obj) },
		UpdateFunc: func(oldObj, newObj any) { notify(oldObj, newObj) },
		DeleteFunc: func(obj any) { notify(obj) },
	}
}

func serviceKeys(obj any) []types.NamespacedName {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	return []types.NamespacedName{{Namespace: m.GetNamespace(), Name: m.GetName()}}
}

func sliceKeys(obj any) []types.NamespacedName {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	name := m.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []types.NamespacedName{{Namespace: m.GetNamespace(), Name: name}}
}

// TransformEndpointSlice is a cache transform keeping only what Answer
// reads of an EndpointSlice: its name, namespace, service-name label,
// address type, ports and each endpoint's first address, conditions, node
// and target pod name. Objects of other types pass unchanged.
func TransformEndpointSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
			DeletionTimestamp: s.DeletionTimestamp,
		},
		AddressType: s.AddressType,
		Ports:       s.Ports,
		Endpoints:   make([]discoveryv1.Endpoint, 0, len(s.Endpoints)),
	}
	if name, ok := s.Labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: name}
	}
	for _, e := range s.Endpoints {
		t := discoveryv1.Endpoint{Conditions: e.Conditions, NodeName: e.NodeName}
		if len(e.Addresses) > 0 {
			t.Addresses = e.Addresses[:1:1]
		}
		if e.TargetRef != nil {
			t.TargetRef = &corev1.ObjectReference{Kind: e.TargetRef.Kind, Name: e.TargetRef.Name}
		}
		out.Endpoints = append(out.Endpoints, t)
	}
	return out, nil
}
