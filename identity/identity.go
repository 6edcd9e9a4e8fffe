// Package identity holds the naming rules shared by the CA, the webhook and the
// sidecar: SPIFFE IDs of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa> and the
// DNS names a namespace may hold. It depends on the standard library only, so the
// sidecar can import it without pulling in controller-side modules.
package identity

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is used when no trust domain is configured.
const DefaultTrustDomain = "cluster.local"

// DefaultClusterDomain is the DNS suffix of Services in a default cluster.
const DefaultClusterDomain = "cluster.local"

// ID is a workload identity: a service account in a namespace of a trust domain.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// New builds an ID and validates every part.
func New(trustDomain, namespace, serviceAccount string) (ID, error) {
	id := ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// Validate checks the trust domain and the Kubernetes names.
func (id ID) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := validateDNSLabel(id.Namespace); err != nil {
		return fmt.Errorf("namespace %q: %w", id.Namespace, err)
	}
	if err := validateDNSSubdomain(id.ServiceAccount); err != nil {
		return fmt.Errorf("service account %q: %w", id.ServiceAccount, err)
	}
	return nil
}

// String renders the ID as a SPIFFE URI.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL renders the ID as a URL, the form x509 URI SANs take.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// Parse reads a SPIFFE ID of the podtls form. It is strict: no query, fragment,
// user info, port, percent-encoding, empty or dot segments, and lower-case only.
func Parse(s string) (ID, error) {
	const scheme = "spiffe://"
	if len(s) > 2048 {
		return ID{}, errors.New("spiffe id: longer than 2048 bytes")
	}
	if !strings.HasPrefix(s, scheme) {
		return ID{}, fmt.Errorf("spiffe id %q: must start with %q", s, scheme)
	}
	rest := s[len(scheme):]
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q: missing path /ns/<namespace>/sa/<serviceaccount>", s)
	}
	if err := ValidateTrustDomain(td); err != nil {
		return ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("spiffe id %q: path must be /ns/<namespace>/sa/<serviceaccount>", s)
	}
	id := ID{TrustDomain: td, Namespace: parts[1], ServiceAccount: parts[3]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	return id, nil
}

// FromURL converts a URI SAN into an ID.
func FromURL(u *url.URL) (ID, error) {
	if u == nil {
		return ID{}, errors.New("spiffe id: nil URI")
	}
	return Parse(u.String())
}

// ValidateTrustDomain checks a SPIFFE trust domain: lower-case letters, digits,
// dots, dashes and underscores, at most 255 bytes.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	if len(td) > 255 {
		return errors.New("trust domain is longer than 255 bytes")
	}
	for _, r := range td {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return fmt.Errorf("trust domain %q: character %q not allowed (lower-case letters, digits, '.', '-', '_')", td, r)
		}
	}
	return nil
}

// Matcher decides whether a peer identity is allowed. Patterns are exact SPIFFE
// IDs or a prefix ending in "/*" (for example spiffe://cluster.local/ns/demo/*).
type Matcher struct {
	exact    map[string]bool
	prefixes []string
}

// NewMatcher compiles allow patterns. With no patterns every ID of trustDomain
// is allowed, which is the documented default of podtls.io/allow.
func NewMatcher(trustDomain string, patterns []string) (*Matcher, error) {
	m := &Matcher{exact: map[string]bool{}}
	if len(patterns) == 0 {
		if err := ValidateTrustDomain(trustDomain); err != nil {
			return nil, err
		}
		m.prefixes = []string{"spiffe://" + trustDomain + "/"}
		return m, nil
	}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if err := ValidatePattern(p); err != nil {
			return nil, err
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			m.prefixes = append(m.prefixes, prefix)
			continue
		}
		m.exact[p] = true
	}
	return m, nil
}

// ValidatePattern checks one allow pattern.
func ValidatePattern(p string) error {
	if prefix, ok := strings.CutSuffix(p, "/*"); ok {
		if strings.Contains(prefix, "*") {
			return fmt.Errorf("allow pattern %q: '*' is only allowed as a final \"/*\"", p)
		}
		if !strings.HasPrefix(prefix, "spiffe://") {
			return fmt.Errorf("allow pattern %q: must start with spiffe://", p)
		}
		td, _, _ := strings.Cut(strings.TrimPrefix(prefix, "spiffe://"), "/")
		if err := ValidateTrustDomain(td); err != nil {
			return fmt.Errorf("allow pattern %q: %w", p, err)
		}
		return nil
	}
	if _, err := Parse(p); err != nil {
		return fmt.Errorf("allow pattern %q: want a SPIFFE ID like spiffe://cluster.local/ns/NS/sa/SA or a prefix ending in /*: %w", p, err)
	}
	return nil
}

// Allows reports whether id matches one of the patterns.
func (m *Matcher) Allows(id string) bool {
	if m == nil {
		return false
	}
	if m.exact[id] {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// NamespaceMayHoldDNSName reports whether a workload of namespace ns may hold the
// DNS name: <label>.<ns>.svc or <label>.<ns>.svc.<clusterDomain>, with exactly
// one label in front (a Service name). Wildcards are never granted.
func NamespaceMayHoldDNSName(ns, clusterDomain, name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	for _, suffix := range []string{"." + ns + ".svc", "." + ns + ".svc." + clusterDomain} {
		label, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if validateDNSLabel(label) == nil {
			return true
		}
	}
	return false
}

// ServiceDNSNames returns the names a Service is known by inside the cluster.
func ServiceDNSNames(service, ns, clusterDomain string) []string {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	return []string{
		service + "." + ns + ".svc",
		service + "." + ns + ".svc." + clusterDomain,
	}
}

// PodDNSNames returns the names Kubernetes DNS publishes for a pod with
// spec.hostname and spec.subdomain behind the headless Service named like the
// subdomain: <hostname>.<subdomain>.<ns>.svc and the same under
// clusterDomain. Hostname and subdomain must each be one DNS label. Whether
// the pod may hold them is the CA's decision, not this function's.
func PodDNSNames(hostname, subdomain, ns, clusterDomain string) ([]string, error) {
	if err := validateDNSLabel(hostname); err != nil {
		return nil, fmt.Errorf("hostname %q: %w", hostname, err)
	}
	if err := validateDNSLabel(subdomain); err != nil {
		return nil, fmt.Errorf("subdomain %q: %w", subdomain, err)
	}
	return ServiceDNSNames(hostname+"."+subdomain, ns, clusterDomain), nil
}

// ParsePodDNSName reads a name of the PodDNSNames form in namespace ns:
// <hostname>.<subdomain>.<ns>.svc or the same under clusterDomain (default
// cluster.local), lower-cased, without a trailing dot. It says nothing about
// whether such a pod exists.
func ParsePodDNSName(ns, clusterDomain, name string) (hostname, subdomain string, ok bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	for _, suffix := range []string{"." + ns + ".svc", "." + ns + ".svc." + clusterDomain} {
		front, found := strings.CutSuffix(name, suffix)
		if !found {
			continue
		}
		h, sub, two := strings.Cut(front, ".")
		if two && validateDNSLabel(h) == nil && validateDNSLabel(sub) == nil {
			return h, sub, true
		}
	}
	return "", "", false
}

// ValidateDNSName checks a DNS name (no wildcard) as RFC 1123 subdomain.
func ValidateDNSName(name string) error {
	return validateDNSSubdomain(strings.TrimSuffix(name, "."))
}

func validateDNSLabel(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '-' && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("must be a DNS label (lower-case letters, digits and inner '-'), got character %q", r)
		}
	}
	return nil
}

func validateDNSSubdomain(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if err := validateDNSLabel(label); err != nil {
			return err
		}
	}
	return nil
}
