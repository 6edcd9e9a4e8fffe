// Package workloads registers machines outside Kubernetes (VMs, bare metal)
// in the mesh: the objects a registration is (a Service and EndpointSlice so
// pods call the machine by name, a service account for its identity, a
// one-time join Secret), and the CA's checks of a machine's first request
// (a join token bound to that Secret, used once) and of its renewals (its
// current certificate, while the registration exists).
package workloads

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/contract"
)

// Registration is one machine: its name (the Service's), namespace, the
// service account whose identity it gets, its addresses and ports.
type Registration struct {
	Name           string
	Namespace      string
	ServiceAccount string
	Addresses      []netip.Addr
	Ports          []Port
}

// Port is a port the machine serves (its sidecar's inbound listener).
type Port struct {
	Name string
	Port int32
}

// Validate reports every problem of r at once.
func (r Registration) Validate() error {
	var errs []error
	for _, c := range []struct {
		what, v string
		check   func(string) []string
	}{
		{"name", r.Name, validation.IsDNS1035Label}, // a Service's name
		{"namespace", r.Namespace, validation.IsDNS1123Label},
		{"service account", r.ServiceAccount, validation.IsDNS1123Subdomain},
	} {
		if msgs := c.check(c.v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s %q: %s", c.what, c.v, strings.Join(msgs, "; ")))
		}
	}
	if len(contract.WorkloadJoinSecretName(r.Name)) > validation.DNS1123SubdomainMaxLength {
		errs = append(errs, fmt.Errorf("name %q: too long", r.Name))
	}
	if len(r.Addresses) == 0 {
		errs = append(errs, errors.New("no address: give the machine's IP address(es)"))
	}
	for _, a := range r.Addresses {
		if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
			errs = append(errs, fmt.Errorf("address %s: want the machine's unicast address, reachable from the pods", a))
		}
	}
	if len(r.Ports) == 0 {
		errs = append(errs, errors.New("no port: give the port(s) its sidecar listens on"))
	}
	seen := map[string]bool{}
	for _, p := range r.Ports {
		if msgs := validation.IsValidPortName(p.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("port name %q: %v", p.Name, msgs))
		}
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("port %d: out of range", p.Port))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("port name %q given twice", p.Name))
		}
		seen[p.Name] = true
	}
	return errors.Join(errs...)
}

// Objects are what a registration creates.
type Objects struct {
	ServiceAccount *corev1.ServiceAccount
	Service        *corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice // one per address family
	JoinSecret     *corev1.Secret
}

// Objects renders the registration's objects (r must be valid).
func (r Registration) Objects() Objects {
	labels := map[string]string{contract.ExternalWorkload: r.Name, contract.ManagedByLabel: contract.ManagedByValue}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: r.Namespace, Labels: labels}
	}
	svc := &corev1.Service{ObjectMeta: meta(r.Name)}
	svc.Annotations = map[string]string{contract.WorkloadServiceAccount: r.ServiceAccount}
	for _, p := range r.Ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Port: p.Port, Protocol: corev1.ProtocolTCP})
	}
	o := Objects{ServiceAccount: &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: r.ServiceAccount, Namespace: r.Namespace}}, Service: svc,
		JoinSecret: &corev1.Secret{ObjectMeta: meta(contract.WorkloadJoinSecretName(r.Name)), Type: contract.WorkloadJoinSecretType}}
	for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		var addrs []string
		for _, a := range r.Addresses {
			if (fam == discoveryv1.AddressTypeIPv4) == a.Unmap().Is4() {
				addrs = append(addrs, a.Unmap().String())
			}
		}
		if len(addrs) == 0 {
			continue
		}
		slices.Sort(addrs)
		m := meta(r.Name + "-" + map[discoveryv1.AddressType]string{discoveryv1.AddressTypeIPv4: "ipv4", discoveryv1.AddressTypeIPv6: "ipv6"}[fam])
		m.Labels = map[string]string{contract.ExternalWorkload: r.Name, contract.ManagedByLabel: contract.ManagedByValue,
			discoveryv1.LabelServiceName: r.Name, discoveryv1.LabelManagedBy: "podtls.io"}
		s := &discoveryv1.EndpointSlice{ObjectMeta: m, AddressType: fam,
			Endpoints: []discoveryv1.Endpoint{{Addresses: addrs, Hostname: ptr.To(r.Name), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}}
		for _, p := range r.Ports {
			s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.Port), Protocol: ptr.To(corev1.ProtocolTCP)})
		}
		o.EndpointSlices = append(o.EndpointSlices, s)
	}
	return o
}
