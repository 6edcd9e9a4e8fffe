package dnsrecords

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/contract"
)

// Relevant reports whether a watched object's change can change the
// records (old nil: created or deleted): the publisher's pass reads the
// whole zone, so node heartbeats, pod status updates and its own status
// annotation must not start one.
func Relevant(old, obj client.Object) bool {
	switch o := obj.(type) {
	case *corev1.Service:
		_, asks := o.Annotations[contract.DNSRecords]
		prev, ok := old.(*corev1.Service)
		if !ok {
			return asks
		}
		_, asked := prev.Annotations[contract.DNSRecords]
		return (asks || asked) && (prev.Annotations[contract.DNSRecords] != o.Annotations[contract.DNSRecords] ||
			!maps.Equal(prev.Spec.Selector, o.Spec.Selector) ||
			!slices.EqualFunc(prev.Status.LoadBalancer.Ingress, o.Status.LoadBalancer.Ingress, sameIngress) ||
			(prev.DeletionTimestamp == nil) != (o.DeletionTimestamp == nil))
	case *corev1.Pod:
		_, serves := o.Annotations[contract.ExternalHosts]
		prev, ok := old.(*corev1.Pod)
		if !ok {
			return serves
		}
		_, served := prev.Annotations[contract.ExternalHosts]
		return (serves || served) && (prev.Annotations[contract.ExternalHosts] != o.Annotations[contract.ExternalHosts] ||
			!maps.Equal(prev.Labels, o.Labels) || (prev.DeletionTimestamp == nil) != (o.DeletionTimestamp == nil))
	case *corev1.Node:
		prev, ok := old.(*corev1.Node)
		return !ok || !slices.Equal(prev.Status.Addresses, o.Status.Addresses)
	}
	return true
}

func sameIngress(a, b corev1.LoadBalancerIngress) bool {
	return a.IP == b.IP && a.Hostname == b.Hostname
}
