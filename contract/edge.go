package contract

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// RedirectPort is the plaintext listener of Redirect: HTTP on Listen (all
// interfaces) answered with 308 to https://HOST[:HTTPSPort]/... for the
// pod's external hosts.
type RedirectPort struct {
	Listen    int32 `json:"listen"`
	HTTPSPort int32 `json:"httpsPort"`
}

// parseEdge reads Redirect, TrustedProxies and ProxyProtocol into spec;
// spec.Inbound, spec.ExternalHosts and usedPorts must be filled already.
func parseEdge(a map[string]string, spec *Spec, usedPorts map[int32]string, bad func(key, got, want string)) {
	if v, ok := a[Redirect]; ok {
		const form = `PORT[:HTTPS-PORT], e.g. "8080" or "8080:443"`
		l, h, hasHTTPS := strings.Cut(strings.TrimSpace(v), ":")
		lp, lerr := parsePort(l)
		hp, herr := int32(0), error(nil)
		if hasHTTPS {
			hp, herr = parsePort(h)
		}
		appPort := slices.ContainsFunc(spec.Inbound, func(m PortMapping) bool { return m.Target == lp })
		switch {
		case lerr != nil || herr != nil:
			bad(Redirect, fmt.Sprintf("%q is not PORT[:HTTPS-PORT] with ports 1-65535", v), form)
		case len(spec.ExternalHosts) == 0:
			bad(Redirect, "no "+ExternalHosts+" to redirect to", "the annotation "+ExternalHosts+" beside it")
		case len(spec.Inbound) == 0:
			bad(Redirect, "no "+Inbound+" port serves https", "the annotation "+Inbound+" beside it")
		case usedPorts[lp] != "":
			bad(Redirect, fmt.Sprintf("port %d is already %s", lp, usedPorts[lp]), "a port of its own")
		case appPort:
			bad(Redirect, fmt.Sprintf("port %d is the app's port in %s", lp, Inbound),
				"a port of its own: the app keeps its port on 127.0.0.1, the redirect takes another on all interfaces")
		default:
			if !hasHTTPS {
				hp = spec.Inbound[0].Listen
			}
			usedPorts[lp] = "the redirect port"
			spec.Redirect = &RedirectPort{Listen: lp, HTTPSPort: hp}
		}
	}

	for _, s := range SplitList(a[TrustedProxies]) {
		pfx, err := netip.ParsePrefix(s)
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			pfx, err = a.Unmap().Prefix(a.Unmap().BitLen())
		}
		if err != nil {
			bad(TrustedProxies, fmt.Sprintf("%q is not a CIDR or IP address", s), `comma-separated CIDRs or IP addresses, e.g. "10.0.0.0/8,192.168.1.5"`)
			continue
		}
		if c := pfx.Masked().String(); !slices.Contains(spec.TrustedProxies, c) {
			spec.TrustedProxies = append(spec.TrustedProxies, c)
		}
	}

	for _, s := range SplitList(a[ProxyProtocol]) {
		p, err := parsePort(s)
		switch {
		case err != nil:
			bad(ProxyProtocol, fmt.Sprintf("%q is not a port", s), `comma-separated inbound LISTEN ports, e.g. "8443"`)
		case !slices.ContainsFunc(spec.Inbound, func(m PortMapping) bool { return m.Listen == p }):
			bad(ProxyProtocol, fmt.Sprintf("port %d is not an inbound port", p), "LISTEN ports of "+Inbound)
		case !slices.Contains(spec.ProxyProtocol, p):
			spec.ProxyProtocol = append(spec.ProxyProtocol, p)
		}
	}
}

// edgeWarnings flags edge settings that have no effect.
func edgeWarnings(spec Spec) []string {
	if len(spec.TrustedProxies) > 0 && spec.Mode != "http" {
		return []string{fmt.Sprintf("annotation %s: only %s \"http\" passes X-Forwarded-For; in %q mode it has no effect",
			TrustedProxies, Mode, spec.Mode)}
	}
	return nil
}
