package discovery

import (
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ParseHost maps an upstream host to the Service it names. The forms are
// those of the podtls.io/upstreams annotation: NAME.NS.svc,
// NAME.NS.svc.CLUSTER-DOMAIN, NAME.NS, and NAME alone (a Service of
// callerNS). Case and a trailing dot are ignored. Anything else, including
// names that are not valid Service or namespace names, is not a Service of
// this cluster: ok is false and the caller dials the host as given.
func ParseHost(host, callerNS, clusterDomain string) (svc types.NamespacedName, ok bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || len(host) > validation.DNS1123SubdomainMaxLength {
		return types.NamespacedName{}, false
	}
	labels := strings.Split(host, ".")
	switch {
	case len(labels) == 1:
		svc = types.NamespacedName{Namespace: callerNS, Name: labels[0]}
	case len(labels) == 2:
		svc = types.NamespacedName{Namespace: labels[1], Name: labels[0]}
	case labels[2] != "svc":
		return types.NamespacedName{}, false
	case len(labels) == 3:
		svc = types.NamespacedName{Namespace: labels[1], Name: labels[0]}
	case clusterDomain != "" && strings.Join(labels[3:], ".") == strings.TrimSuffix(strings.ToLower(clusterDomain), "."):
		svc = types.NamespacedName{Namespace: labels[1], Name: labels[0]}
	default:
		return types.NamespacedName{}, false
	}
	// Service names are DNS-1035 labels, namespaces DNS-1123 labels.
	if len(validation.IsDNS1035Label(svc.Name)) > 0 || len(validation.IsDNS1123Label(svc.Namespace)) > 0 {
		return types.NamespacedName{}, false
	}
	return svc, true
}

// ServiceHost is the canonical host of a Service, NAME.NS.svc.
func ServiceHost(svc types.NamespacedName) string {
	return svc.Name + "." + svc.Namespace + ".svc"
}
