package issuerconfig

import (
	"strings"
)

// Allowed reports whether namespace may ask for a certificate naming host
// (see AllowRule). Without rules every request is allowed.
func (c Config) Allowed(namespace, host string) bool {
	if len(c.Allow) == 0 {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, r := range c.Allow {
		if len(r.Namespaces) > 0 && !contains(r.Namespaces, namespace) {
			continue
		}
		for _, p := range r.Hosts {
			if matchHost(p, host) {
				return true
			}
		}
	}
	return false
}

func matchHost(pattern, host string) bool {
	if pattern == host {
		return true // also "*.example.com" asking for itself
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok || !strings.HasPrefix(suffix, ".") {
		return false
	}
	label, ok := strings.CutSuffix(host, suffix)
	return ok && label != "" && !strings.ContainsAny(label, ".*")
}
