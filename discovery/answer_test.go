package discovery

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/discovery/discoveryapi"
)

func service(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "preference"},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}
}

// conds builds conditions; nil pointers stay nil.
func conds(ready, serving, terminating *bool) discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}
}

func ep(addr string, c discoveryv1.EndpointConditions) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: c}
}

func slice(name string, port *discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "preference"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	if port != nil {
		s.Ports = []discoveryv1.EndpointPort{*port}
	}
	return s
}

func named(name string, port int32) *discoveryv1.EndpointPort {
	p := &discoveryv1.EndpointPort{Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}
	if name != "" {
		p.Name = ptr.To(name)
	}
	return p
}

func out(eps ...discoveryapi.Endpoint) []discoveryapi.Endpoint {
	if eps == nil {
		return []discoveryapi.Endpoint{}
	}
	return eps
}

func TestAnswer(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	https := corev1.ServicePort{Name: "https", Port: 8443, Protocol: corev1.ProtocolTCP}
	unnamed := corev1.ServicePort{Port: 8443}
	ready := discoveryapi.Endpoint{Port: 9443, Ready: true, Serving: true}
	at := func(e discoveryapi.Endpoint, addr string) discoveryapi.Endpoint { e.Address = addr; return e }

	for _, tt := range []struct {
		name   string
		svc    *corev1.Service
		port   int32
		slices []discoveryv1.EndpointSlice
		want   []discoveryapi.Endpoint
		ok     bool
	}{
		{name: "no slices", svc: service(https), port: 8443, want: out(), ok: true},
		{name: "port by name, sorted numerically", svc: service(https), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{slice("a", named("https", 9443),
				ep("10.0.0.10", conds(yes, yes, no)), ep("10.0.0.9", conds(yes, yes, no)))},
			want: out(at(ready, "10.0.0.9"), at(ready, "10.0.0.10"))},
		{name: "unnamed single port", svc: service(unnamed), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{slice("a", named("", 9443), ep("10.0.0.1", conds(nil, nil, nil)))},
			want:   out(at(ready, "10.0.0.1"))},
		{name: "slice of another port name ignored", svc: service(https), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{slice("a", named("metrics", 9090), ep("10.0.0.1", conds(yes, yes, no)))},
			want:   out()},
		{name: "slice without ports ignored", svc: service(https), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{slice("a", nil, ep("10.0.0.1", conds(yes, yes, no)))},
			want:   out()},
		{name: "conditions", svc: service(https), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{slice("a", named("https", 9443),
				ep("10.0.0.1", conds(nil, nil, nil)),                     // nil: ready, serving
				ep("10.0.0.2", conds(no, yes, yes)),                      // terminating, still serving
				ep("10.0.0.3", conds(no, no, yes)),                       // gone
				ep("10.0.0.4", conds(no, nil, nil)),                      // serving defers to ready
				ep("10.0.0.5", conds(nil, no, nil)),                      // ready but not serving: listed
				ep("not-an-ip", conds(yes, yes, nil)),                    // skipped
				discoveryv1.Endpoint{Conditions: conds(yes, yes, nil)})}, // no address
			want: out(at(ready, "10.0.0.1"),
				discoveryapi.Endpoint{Address: "10.0.0.2", Port: 9443, Serving: true, Terminating: true},
				discoveryapi.Endpoint{Address: "10.0.0.5", Port: 9443, Ready: true})},
		{name: "duplicate across slices keeps the better", svc: service(https), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{
				slice("b", named("https", 9443), ep("10.0.0.1", conds(yes, yes, no))),
				slice("a", named("https", 9443), ep("10.0.0.1", conds(no, yes, yes))),
			},
			want: out(at(ready, "10.0.0.1"))},
		{name: "pod and node", svc: service(https), port: 8443, ok: true,
			slices: []discoveryv1.EndpointSlice{slice("a", named("https", 9443), discoveryv1.Endpoint{
				Addresses: []string{"10.0.0.1"}, NodeName: ptr.To("node-1"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "preference-0"}})},
			want: out(discoveryapi.Endpoint{Address: "10.0.0.1", Port: 9443, Ready: true, Serving: true, Pod: "preference-0", Node: "node-1"})},
		{name: "slice of another service ignored", svc: service(https), port: 8443, ok: true,
			slices: func() []discoveryv1.EndpointSlice {
				s := slice("a", named("https", 9443), ep("10.0.0.1", conds(yes, yes, no)))
				s.Labels[discoveryv1.LabelServiceName] = "other"
				return []discoveryv1.EndpointSlice{s}
			}(),
			want: out()},
		{name: "FQDN slice ignored", svc: service(https), port: 8443, ok: true,
			slices: func() []discoveryv1.EndpointSlice {
				s := slice("a", named("https", 9443), ep("db.example.com", conds(yes, yes, no)))
				s.AddressType = discoveryv1.AddressTypeFQDN
				return []discoveryv1.EndpointSlice{s}
			}(),
			want: out()},
		{name: "IPv6", svc: service(https), port: 8443, ok: true,
			slices: func() []discoveryv1.EndpointSlice {
				s := slice("a", named("https", 9443), ep("fd00::2", conds(yes, yes, no)), ep("fd00:0::1", conds(yes, yes, no)))
				s.AddressType = discoveryv1.AddressTypeIPv6
				return []discoveryv1.EndpointSlice{s}
			}(),
			want: out(at(ready, "fd00::1"), at(ready, "fd00::2"))},
		{name: "unknown port", svc: service(https), port: 443},
		{name: "UDP port only", svc: service(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}), port: 53},
		{name: "ExternalName", port: 8443, svc: func() *corev1.Service {
			s := service(https)
			s.Spec.Type = corev1.ServiceTypeExternalName
			return s
		}()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Answer(tt.svc, tt.port, tt.slices)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if got.Service != "preference.demo.svc" || got.Port != tt.port || len(got.Version) != 16 {
				t.Errorf("service %q port %d version %q", got.Service, got.Port, got.Version)
			}
			if !reflect.DeepEqual(got.Endpoints, tt.want) {
				t.Errorf("endpoints\n got %+v\nwant %+v", got.Endpoints, tt.want)
			}
		})
	}
}

// TestVersion: equal sets have equal versions whatever the slice order; any
// change of the set changes it.
func TestVersion(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	svc := service(corev1.ServicePort{Name: "https", Port: 8443})
	a := slice("a", named("https", 9443), ep("10.0.0.1", conds(yes, yes, no)))
	b := slice("b", named("https", 9443), ep("10.0.0.2", conds(yes, yes, no)))
	v := func(slices ...discoveryv1.EndpointSlice) string {
		got, ok := Answer(svc, 8443, slices)
		if !ok {
			t.Fatal("no answer")
		}
		return got.Version
	}
	if v(a, b) != v(b, a) {
		t.Error("slice order changes the version")
	}
	notReady := slice("b", named("https", 9443), ep("10.0.0.2", conds(no, yes, yes)))
	otherPort := slice("b", named("https", 9444), ep("10.0.0.2", conds(yes, yes, no)))
	seen := map[string]string{}
	for name, set := range map[string][]discoveryv1.EndpointSlice{
		"a": {a}, "a+b": {a, b}, "a+b not ready": {a, notReady}, "a+b other port": {a, otherPort}, "none": nil,
	} {
		ver := v(set...)
		if prev, dup := seen[ver]; dup {
			t.Errorf("%s and %s share version %s", name, prev, ver)
		}
		seen[ver] = name
	}
}

// TestTransformEndpointSlice: the cache keeps what Answer reads, drops the rest.
func TestTransformEndpointSlice(t *testing.T) {
	yes := ptr.To(true)
	s := slice("a", named("https", 9443),
		discoveryv1.Endpoint{Addresses: []string{"10.0.0.1", "10.0.0.9"}, Conditions: conds(yes, yes, nil),
			Hostname: ptr.To("web-0"), Zone: ptr.To("a"), NodeName: ptr.To("node-1"),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: "web-0", UID: "u"},
			Hints:     &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}}},
		ep("10.0.0.2", conds(nil, nil, nil)))
	s.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "now"}
	s.Labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}
	svc := service(corev1.ServicePort{Name: "https", Port: 8443})

	before, _ := Answer(svc, 8443, []discoveryv1.EndpointSlice{s})
	obj, err := TransformEndpointSlice(&s)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*discoveryv1.EndpointSlice)
	after, _ := Answer(svc, 8443, []discoveryv1.EndpointSlice{*got})
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("answer changed by the transform:\n%+v\n%+v", before, after)
	}
	if len(got.Annotations) != 0 || len(got.Labels) != 1 || got.ManagedFields != nil ||
		got.Endpoints[0].Hints != nil || got.Endpoints[0].Zone != nil || len(got.Endpoints[0].Addresses) != 1 {
		t.Errorf("kept more than answers need: %+v", got)
	}
	if other, _ := TransformEndpointSlice(svc); other != svc {
		t.Error("another type was transformed")
	}
}
