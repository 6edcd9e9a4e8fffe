package dnsrecords

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podtls/podtls/contract"
)

// Inputs are the objects the desired records follow.
type Inputs struct {
	Services []corev1.Service
	Pods     []corev1.Pod
	Nodes    []corev1.Node
	Zone     string // the managed zone, e.g. "example.test"
	TTL      int64
	// Allowed reports whether namespace may have host (the issuer's allow
	// rules, as for certificates).
	Allowed func(namespace, host string) bool
}

// Problem is a Service whose records cannot be what it asks for.
type Problem struct {
	Service string // namespace/name
	Message string
}

// Wanted computes the records the annotated Services ask for: the external
// hosts of their pods, pointed at their targets. Services still waiting for
// a load balancer address ask for nothing yet.
func Wanted(in Inputs) ([]Desired, []Problem) {
	zone := strings.TrimSuffix(strings.ToLower(in.Zone), ".")
	var out []Desired
	var problems []Problem
	for _, svc := range in.Services {
		v, ok := svc.Annotations[contract.DNSRecords]
		if !ok || svc.DeletionTimestamp != nil {
			continue
		}
		id := svc.Namespace + "/" + svc.Name
		bad := func(format string, args ...any) {
			problems = append(problems, Problem{Service: id, Message: fmt.Sprintf(format, args...)})
		}
		a4, a6, cname, err := targets(strings.TrimSpace(v), svc, in.Nodes)
		if err != nil {
			bad("annotation %s: %v", contract.DNSRecords, err)
			continue
		}
		for _, host := range hostsOf(svc, in.Pods) {
			switch {
			case !validName(host, true):
				bad("external host %q is not a DNS name", host)
				continue
			case host != zone && !strings.HasSuffix(host, "."+zone):
				bad("%s is outside the zone %s", host, zone)
				continue
			case in.Allowed != nil && !in.Allowed(svc.Namespace, host):
				bad("%s is not allowed for namespace %s by the issuer's allow rules", host, svc.Namespace)
				continue
			}
			res := "service/" + id
			if cname != "" && host == zone {
				bad("%s is the zone's apex, where a CNAME cannot be; point it at IP addresses", host)
				continue
			}
			if cname != "" {
				out = append(out, Desired{Record: Record{Name: host, Type: TypeCNAME, Targets: []string{cname}, TTL: in.TTL}, Resource: res})
				continue
			}
			if len(a4) > 0 {
				out = append(out, Desired{Record: Record{Name: host, Type: TypeA, Targets: a4, TTL: in.TTL}, Resource: res})
			}
			if len(a6) > 0 {
				out = append(out, Desired{Record: Record{Name: host, Type: TypeAAAA, Targets: a6, TTL: in.TTL}, Resource: res})
			}
		}
	}
	return out, problems
}

// targets resolves the annotation's value to addresses or a hostname.
func targets(v string, svc corev1.Service, nodes []corev1.Node) (a4, a6 []string, cname string, err error) {
	add := func(s string) error {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%q is not an IP address", s)
		}
		if ip.Unmap().Is4() {
			a4 = append(a4, ip.Unmap().String())
		} else {
			a6 = append(a6, ip.String())
		}
		return nil
	}
	switch v {
	case "true":
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			switch {
			case ing.IP != "":
				if err := add(ing.IP); err != nil {
					return nil, nil, "", err
				}
			case ing.Hostname != "":
				cname = strings.TrimSuffix(strings.ToLower(ing.Hostname), ".")
				if !validName(cname, false) {
					return nil, nil, "", fmt.Errorf("load balancer hostname %q is not a DNS name", ing.Hostname)
				}
			}
		}
		if cname != "" && len(a4)+len(a6) > 0 {
			cname = "" // addresses win over a hostname
		}
	case "nodes":
		for _, n := range nodes {
			external, internal := addrs(n, corev1.NodeExternalIP), addrs(n, corev1.NodeInternalIP)
			use := external
			if len(use) == 0 {
				use = internal
			}
			for _, a := range use {
				if err := add(a); err != nil {
					return nil, nil, "", err
				}
			}
		}
	default:
		items := contract.SplitList(v)
		if len(items) == 1 && strings.Contains(items[0], ".") && !strings.ContainsAny(items[0], ":") {
			if _, err := netip.ParseAddr(items[0]); err != nil {
				name := strings.TrimSuffix(strings.ToLower(items[0]), ".")
				if !validName(name, false) {
					return nil, nil, "", fmt.Errorf(`%q is not a DNS name; want "true", "nodes", IP addresses or one hostname`, items[0])
				}
				return nil, nil, name, nil
			}
		}
		if len(items) == 0 {
			return nil, nil, "", fmt.Errorf(`want "true", "nodes", IP addresses or one hostname`)
		}
		for _, s := range items {
			if err := add(s); err != nil {
				return nil, nil, "", fmt.Errorf(`%v; want "true", "nodes", IP addresses or one hostname`, err)
			}
		}
	}
	slices.Sort(a4)
	slices.Sort(a6)
	return slices.Compact(a4), slices.Compact(a6), cname, nil
}

// validName reports whether name is a DNS name podtls publishes or points
// at (lower case, without the trailing dot); a leading "*." when wildcard.
func validName(name string, wildcard bool) bool {
	if wildcard {
		name = strings.TrimPrefix(name, "*.")
	}
	return validation.IsDNS1123Subdomain(name) == nil && strings.Contains(name, ".")
}

func addrs(n corev1.Node, t corev1.NodeAddressType) []string {
	var out []string
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			out = append(out, a.Address)
		}
	}
	return out
}

// hostsOf is the union of the external hosts of the Service's pods.
func hostsOf(svc corev1.Service, pods []corev1.Pod) []string {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var hosts []string
	for _, p := range pods {
		if p.Namespace != svc.Namespace || p.DeletionTimestamp != nil || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		for _, h := range contract.SplitList(p.Annotations[contract.ExternalHosts]) {
			h = strings.TrimSuffix(strings.ToLower(h), ".")
			if !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	slices.Sort(hosts)
	return hosts
}
