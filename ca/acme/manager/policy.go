package manager

import (
	"slices"
	"strings"

	"github.com/podtls/podtls/ca/acme/config"
)

// allowed reports whether namespace ns may ask for host under cfg.Allow.
func allowed(cfg config.Config, ns, host string) bool {
	if len(cfg.Allow) == 0 {
		return true
	}
	for _, r := range cfg.Allow {
		if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, ns) {
			continue
		}
		for _, p := range r.Hosts {
			p = strings.ToLower(p)
			if p == host {
				return true
			}
			if suffix, ok := strings.CutPrefix(p, "*."); ok {
				label, rest, found := strings.Cut(host, ".")
				if found && rest == suffix && label != "" {
					return true
				}
			}
		}
	}
	return false
}
