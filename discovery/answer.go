package discovery

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/discovery/discoveryapi"
)

// Answer computes the endpoints of port of svc from the Service's
// EndpointSlices (those labelled kubernetes.io/service-name=NAME in its
// namespace; others are ignored). ok is false when svc is an ExternalName
// Service or has no TCP port numbered port.
//
// A slice port matches the Service port by name (both empty for an unnamed
// single port), as kube-proxy matches them. An endpoint is listed when it is
// ready or serving; a nil ready counts as true, a nil serving as the value
// of ready, a nil terminating as false (the EndpointSlice API's rules). Only
// IP slices count, and only an endpoint's first address (the API says the
// addresses are fungible). An address and port listed by two slices (while
// the EndpointSlice controller moves endpoints between slices) appears once,
// with the better conditions. The result is sorted by address, then port,
// and its Version is a hash of the whole answer.
func Answer(svc *corev1.Service, port int32, endpointSlices []discoveryv1.EndpointSlice) (discoveryapi.Endpoints, bool) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return discoveryapi.Endpoints{}, false
	}
	sp, ok := servicePort(svc, port)
	if !ok {
		return discoveryapi.Endpoints{}, false
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	byName := slices.Clone(endpointSlices)
	slices.SortFunc(byName, func(a, b discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })

	type addrPort struct {
		addr netip.Addr
		port int32
	}
	found := map[addrPort]discoveryapi.Endpoint{}
	for i := range byName {
		s := &byName[i]
		if s.Namespace != svc.Namespace || s.Labels[discoveryv1.LabelServiceName] != svc.Name {
			continue
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		target, ok := slicePort(s.Ports, sp.Name)
		if !ok {
			continue
		}
		for _, e := range s.Endpoints {
			addr, ep, ok := endpoint(e, target)
			if !ok {
				continue
			}
			k := addrPort{addr, target}
			if prev, dup := found[k]; dup && rank(prev) >= rank(ep) {
				continue
			}
			found[k] = ep
		}
	}
	keys := make([]addrPort, 0, len(found))
	for k := range found {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b addrPort) int {
		return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port))
	})
	out := discoveryapi.Endpoints{Service: ServiceHost(key), Port: port, Endpoints: make([]discoveryapi.Endpoint, 0, len(keys))}
	for _, k := range keys {
		out.Endpoints = append(out.Endpoints, found[k])
	}
	out.Version = version(out)
	return out, true
}

// servicePort finds the TCP port numbered port of svc.
func servicePort(svc *corev1.Service, port int32) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if p.Port == port && (p.Protocol == corev1.ProtocolTCP || p.Protocol == "") {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// slicePort is the target port of the slice port named name (TCP).
func slicePort(ports []discoveryv1.EndpointPort, name string) (int32, bool) {
	for _, p := range ports {
		if p.Name == nil && name != "" || p.Name != nil && *p.Name != name {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			return 0, false
		}
		return *p.Port, true
	}
	return 0, false
}

// endpoint converts e on port, if it is ready or serving and has an IP.
func endpoint(e discoveryv1.Endpoint, port int32) (netip.Addr, discoveryapi.Endpoint, bool) {
	if len(e.Addresses) == 0 {
		return netip.Addr{}, discoveryapi.Endpoint{}, false
	}
	addr, err := netip.ParseAddr(e.Addresses[0])
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, discoveryapi.Endpoint{}, false
	}
	addr = addr.Unmap()
	c := e.Conditions
	ready := c.Ready == nil || *c.Ready
	serving := ready
	if c.Serving != nil {
		serving = *c.Serving
	}
	if !ready && !serving {
		return netip.Addr{}, discoveryapi.Endpoint{}, false
	}
	ep := discoveryapi.Endpoint{
		Address:     addr.String(),
		Port:        port,
		Ready:       ready,
		Serving:     serving,
		Terminating: c.Terminating != nil && *c.Terminating,
	}
	if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
		ep.Pod = e.TargetRef.Name
	}
	if e.NodeName != nil {
		ep.Node = *e.NodeName
	}
	return addr, ep, true
}

// rank orders duplicates: ready beats serving, not terminating beats terminating.
func rank(e discoveryapi.Endpoint) int {
	r := 0
	if e.Ready {
		r += 4
	}
	if e.Serving {
		r += 2
	}
	if !e.Terminating {
		r++
	}
	return r
}

// version is the first 16 hex digits of the SHA-256 of a canonical encoding
// of the answer without its version: one line per field group, fields
// separated by NUL (no Kubernetes name or IP address contains one), the
// endpoints in their sorted order.
func version(e discoveryapi.Endpoints) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\n", e.Service, e.Port)
	for _, ep := range e.Endpoints {
		fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\x00%t\x00%t\x00%t\n",
			ep.Address, ep.Port, ep.Pod, ep.Node, ep.Ready, ep.Serving, ep.Terminating)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
