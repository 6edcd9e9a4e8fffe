package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/identity"
)

// Bounds of podtls.io/cert-ttl. The CA clamps again; these catch typos early.
const (
	MinCertTTL = time.Hour
	MaxCertTTL = 7 * 24 * time.Hour
)

// Bounds and defaults of podtls.io/idle-timeout and podtls.io/drain-timeout.
// The defaults are the sidecar's own (--idle-timeout, --drain-timeout).
const (
	MinIdleTimeout      = time.Second
	MaxIdleTimeout      = 7 * 24 * time.Hour
	DefaultIdleTimeout  = time.Hour
	MinDrainTimeout     = time.Second
	MaxDrainTimeout     = time.Hour
	DefaultDrainTimeout = 20 * time.Second
)

// MaxAnnotationLen bounds every podtls annotation value Parse reads.
const MaxAnnotationLen = 8 << 10

// Spec is the typed form of a pod's podtls annotations.
type Spec struct {
	Inbound        []PortMapping `json:"inbound,omitempty"`
	Upstreams      []Upstream    `json:"upstreams,omitempty"`
	ExternalHosts  []string      `json:"externalHosts,omitempty"` // sorted, unique, lower-case
	ExternalSecret string        `json:"externalSecret,omitempty"`
	Allow          []string      `json:"allow,omitempty"`
	DNSNames       []string      `json:"dnsNames,omitempty"`
	Mode           string        `json:"mode"` // tcp or http
	CertTTL        time.Duration `json:"certTTL,omitempty"`
	SidecarMode    Placement     `json:"sidecarMode"`
	IdleTimeout    time.Duration `json:"idleTimeout,omitempty"`  // 0: the sidecar's default
	DrainTimeout   time.Duration `json:"drainTimeout,omitempty"` // 0: the sidecar's default
	// KeepProbes is RewriteProbes "false": the app's probes stay as written.
	KeepProbes bool `json:"keepProbes,omitempty"`
	// AccessLog is AccessLog "true": the sidecar runs with --access-log.
	AccessLog bool `json:"accessLog,omitempty"`
	// Identity is the Identity annotation: IdentityAgent,
	// IdentityPodCertificate, or "" (auto); the webhook resolves "" to the
	// source it injects.
	Identity string `json:"identity,omitempty"`
	// Resources override the sidecar's default requests and limits.
	Resources Resources `json:"resources,omitzero"`
	// MaxConnections is the explicit connection limit; 0: MaxConnectionsFor
	// the effective memory limit.
	MaxConnections int `json:"maxConnections,omitempty"`
	// Redirect is the plaintext port answering 308 to https (edge.go).
	Redirect *RedirectPort `json:"redirect,omitempty"`
	// TrustedProxies are CIDRs whose X-Forwarded-For is kept (http mode).
	TrustedProxies []string `json:"trustedProxies,omitempty"`
	// ProxyProtocol lists the inbound ports that expect PROXY protocol v2.
	ProxyProtocol []int32 `json:"proxyProtocol,omitempty"`
	// AppCerts delivers certificate files into the app containers; nil: none.
	AppCerts *AppCertSpec `json:"appCerts,omitempty"`
}

// Drain is the drain timeout the sidecar runs with: the annotation's, or the
// default.
func (s Spec) Drain() time.Duration {
	if s.DrainTimeout > 0 {
		return s.DrainTimeout
	}
	return DefaultDrainTimeout
}

// PortMapping is one inbound listener: TLS on Listen, plaintext to 127.0.0.1:Target.
type PortMapping struct {
	Listen int32 `json:"listen"`
	Target int32 `json:"target"`
	// Protocol is what the app speaks on Target: "tcp", "http1", "h2c", or
	// empty for the pod's mode.
	Protocol string `json:"protocol,omitempty"`
}

// InboundProtocols are the app protocols an inbound item may name after '/'.
var InboundProtocols = []string{"tcp", "http1", "h2c"}

// Upstream is one outbound listener: plaintext on 127.0.0.1:LocalPort, mTLS to
// Host:Port, or, when Public, TLS verified with the system roots.
type Upstream struct {
	Host      string `json:"host"`
	Port      int32  `json:"port"`
	LocalPort int32  `json:"localPort"`
	ID        string `json:"id,omitempty"`     // pinned SPIFFE ID of the upstream, optional
	Public    bool   `json:"public,omitempty"` // "tls://": a service outside the mesh
	// Protocol is UpstreamTCP or UpstreamHTTP; empty follows the pod's mode.
	Protocol string `json:"protocol,omitempty"`
	// Timeout bounds each request's wait for its response headers, and
	// Retries is how many times an idempotent request without a body is sent
	// again after it failed; both only for balanced (HTTP) upstreams.
	Timeout time.Duration `json:"timeout,omitempty"`
	Retries int32         `json:"retries,omitempty"`
}

// Defaults are what Parse needs besides the annotations: the cluster's names
// and the controller's default sidecar mode.
type Defaults struct {
	TrustDomain   string
	ClusterDomain string
	SidecarMode   Placement
}

// Parse reads the podtls annotations of a pod in namespace ns into a Spec.
// Every problem is reported, each naming the annotation and the expected form;
// the errors are joined. Warnings describe valid but suspicious settings.
func Parse(annotations map[string]string, ns string, cfg Defaults) (Spec, []string, error) {
	var errs, warns []string
	bad := func(key, got, want string) {
		errs = append(errs, fmt.Sprintf("annotation %s: %s; want %s", key, got, want))
	}
	spec := Spec{Mode: "tcp", SidecarMode: cfg.SidecarMode}
	// a holds the podtls annotations small enough to parse.
	a := map[string]string{}
	for _, key := range slices.Concat([]string{Inbound, Upstreams, ExternalHosts,
		Allow, DNSNames, Mode, CertTTL, SidecarMode, IdleTimeout, DrainTimeout, RewriteProbes, AccessLog, Identity,
		Redirect, TrustedProxies, ProxyProtocol}, resourceKeys, appCertKeys) {
		v, ok := annotations[key]
		if !ok {
			continue
		}
		if len(v) > MaxAnnotationLen {
			bad(key, fmt.Sprintf("value is %d bytes long", len(v)), fmt.Sprintf("at most %d bytes", MaxAnnotationLen))
			continue
		}
		a[key] = v
	}

	usedPorts := map[int32]string{AdminPort: "the sidecar's admin port"}

	const inboundForm = `comma-separated LISTEN:TARGET[/PROTOCOL] items, PROTOCOL tcp, http1 or h2c (default: the mode), e.g. "8443:8080,9443:9090"`
	for _, item := range SplitList(a[Inbound]) {
		l, t, ok := strings.Cut(item, ":")
		t, proto, hasProto := strings.Cut(t, "/")
		lp, lerr := parsePort(l)
		tp, terr := parsePort(t)
		switch {
		case !ok || lerr != nil || terr != nil:
			bad(Inbound, fmt.Sprintf("%q is not LISTEN:TARGET[/PROTOCOL] with ports 1-65535", item), inboundForm)
		case hasProto && !slices.Contains(InboundProtocols, proto):
			bad(Inbound, fmt.Sprintf("%q names protocol %q", item, proto), inboundForm)
		case lp == tp:
			bad(Inbound, fmt.Sprintf("%q listens on the app's own port", item),
				"different ports: the sidecar takes LISTEN on all interfaces, the app keeps TARGET on 127.0.0.1")
		case usedPorts[lp] != "":
			bad(Inbound, fmt.Sprintf("port %d in %q is already %s", lp, item, usedPorts[lp]), "each port once")
		default:
			usedPorts[lp] = "an inbound port"
			spec.Inbound = append(spec.Inbound, PortMapping{Listen: lp, Target: tp, Protocol: proto})
		}
	}

	const upstreamForm = `comma-separated [tls://]HOST:PORT@LOCALPORT[/tcp|/http][?timeout=DUR&retries=N][#SPIFFE-ID], e.g. "preference.demo.svc:8443@9001/http?timeout=5s,tls://api.example.com:443@9002"`
	for _, item := range SplitList(a[Upstreams]) {
		u, err := parseUpstream(item, cfg.ClusterDomain)
		if err != nil {
			bad(Upstreams, fmt.Sprintf("%q: %v", item, err), upstreamForm)
			continue
		}
		if used := usedPorts[u.LocalPort]; used != "" {
			bad(Upstreams, fmt.Sprintf("local port %d in %q is already %s", u.LocalPort, item, used), "each port once")
			continue
		}
		usedPorts[u.LocalPort] = "an upstream's local port"
		spec.Upstreams = append(spec.Upstreams, u)
	}

	const hostsForm = `comma-separated DNS names, wildcards as "*.example.com", e.g. "shop.example.com,*.shop.example.com"`
	for _, h := range SplitList(a[ExternalHosts]) {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		if err := validateExternalHost(h); err != nil {
			bad(ExternalHosts, fmt.Sprintf("%q: %v", h, err), hostsForm)
			continue
		}
		if !slices.Contains(spec.ExternalHosts, h) {
			spec.ExternalHosts = append(spec.ExternalHosts, h)
		}
	}
	if len(spec.ExternalHosts) > 0 {
		slices.Sort(spec.ExternalHosts)
		spec.ExternalSecret = ExternalSecretName(spec.ExternalHosts)
	}

	const allowForm = `comma-separated SPIFFE IDs or prefixes ending in "/*", e.g. "spiffe://cluster.local/ns/demo/sa/customer,spiffe://cluster.local/ns/ops/*"`
	for _, p := range SplitList(a[Allow]) {
		if err := identity.ValidatePattern(p); err != nil {
			bad(Allow, err.Error(), allowForm)
			continue
		}
		if !strings.HasPrefix(p, "spiffe://"+cfg.TrustDomain+"/") {
			warns = append(warns, fmt.Sprintf("annotation %s: %q is outside the trust domain %q; no workload of this cluster can match it",
				Allow, p, cfg.TrustDomain))
		}
		spec.Allow = append(spec.Allow, p)
	}

	dnsForm := fmt.Sprintf("comma-separated Service names of namespace %q: NAME.%s.svc or NAME.%s.svc.%s", ns, ns, ns, cfg.ClusterDomain)
	for _, n := range SplitList(a[DNSNames]) {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if _, _, isPod := identity.ParsePodDNSName(ns, cfg.ClusterDomain, n); isPod {
			bad(DNSNames, fmt.Sprintf("%q is a pod's own name (<hostname>.<subdomain>.%s.svc), added to the certificate by the CA when a headless Service named like the pod's subdomain selects it", n, ns),
				dnsForm+"; leave pod names out")
			continue
		}
		if !identity.NamespaceMayHoldDNSName(ns, cfg.ClusterDomain, n) {
			bad(DNSNames, fmt.Sprintf("%q is not a Service name of namespace %q", n, ns), dnsForm)
			continue
		}
		if !slices.Contains(spec.DNSNames, n) {
			spec.DNSNames = append(spec.DNSNames, n)
		}
	}

	if v, ok := a[Mode]; ok {
		switch v = strings.TrimSpace(v); v {
		case "tcp", "http":
			spec.Mode = v
		default:
			bad(Mode, fmt.Sprintf("got %q", v), `"tcp" or "http"`)
		}
	}

	for _, u := range spec.Upstreams {
		if (u.Timeout > 0 || u.Retries > 0) && u.Protocol != UpstreamHTTP && (u.Protocol != "" || spec.Mode != "http") {
			bad(Upstreams, fmt.Sprintf("%q sets %q but its connections are forwarded, not its requests", u.String(), u.Policy()),
				`"/http" on the upstream (or podtls.io/mode: "http") for a request timeout or retries`)
		}
	}

	if v, ok := a[CertTTL]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		switch {
		case err != nil:
			bad(CertTTL, fmt.Sprintf("%q is not a duration", v), `a Go duration between 1h and 168h, e.g. "24h"`)
		case d < MinCertTTL || d > MaxCertTTL:
			bad(CertTTL, fmt.Sprintf("%s is out of range", d), `a Go duration between 1h and 168h, e.g. "24h"`)
		default:
			spec.CertTTL = d
		}
	}

	if v, ok := a[IdleTimeout]; ok {
		if d, err := parseBoundedDuration(v, MinIdleTimeout, MaxIdleTimeout); err != nil {
			bad(IdleTimeout, err.Error(), `a Go duration between 1s and 168h, e.g. "4h"`)
		} else {
			spec.IdleTimeout = d
		}
	}
	if v, ok := a[DrainTimeout]; ok {
		if d, err := parseBoundedDuration(v, MinDrainTimeout, MaxDrainTimeout); err != nil {
			bad(DrainTimeout, err.Error(), `a Go duration between 1s and 1h, e.g. "45s"`)
		} else {
			spec.DrainTimeout = d
		}
	}

	if v, ok := a[SidecarMode]; ok {
		switch v = strings.TrimSpace(v); v {
		case string(SidecarModeNative), string(SidecarModeLegacy):
			spec.SidecarMode = Placement(v)
		default:
			bad(SidecarMode, fmt.Sprintf("got %q", v), `"native" (Kubernetes >= 1.29) or "legacy"`)
		}
	}

	if v, ok := a[RewriteProbes]; ok {
		switch v = strings.TrimSpace(v); v {
		case "true":
		case "false":
			spec.KeepProbes = true
		default:
			bad(RewriteProbes, fmt.Sprintf("got %q", v), `"true" (the default) or "false"`)
		}
	}

	if v, ok := a[Identity]; ok {
		switch v = strings.TrimSpace(v); v {
		case IdentityAuto:
		case IdentityAgent, IdentityPodCertificate:
			spec.Identity = v
		default:
			bad(Identity, fmt.Sprintf("got %q", v), `"auto" (the default), "agent" or "podCertificate"`)
		}
	}

	if v, ok := a[AccessLog]; ok {
		switch v = strings.TrimSpace(v); v {
		case "true":
			spec.AccessLog = true
		case "false":
		default:
			bad(AccessLog, fmt.Sprintf("got %q", v), `"true" or "false" (the default)`)
		}
	}

	parseEdge(a, &spec, usedPorts, bad)
	parseResources(a, &spec, bad)
	warns = append(warns, parseAppCerts(a, &spec, bad)...)

	if len(errs) > 0 {
		return Spec{}, nil, errors.New(strings.Join(errs, "; "))
	}
	warns = append(warns, specWarnings(spec)...)
	return spec, warns, nil
}

// specWarnings flags valid settings that probably do not do what the user wants.
func specWarnings(spec Spec) []string {
	var w []string
	if len(spec.ExternalHosts) > 0 && len(spec.Inbound) == 0 &&
		(spec.AppCerts == nil || !slices.Contains(spec.AppCerts.Sources, AppSourceExternal)) {
		w = append(w, fmt.Sprintf("annotation %s: no %s port to serve the external certificate on",
			ExternalHosts, Inbound))
	}
	if spec.Mode == "http" && len(spec.Inbound) == 0 && len(spec.Upstreams) == 0 {
		w = append(w, fmt.Sprintf("annotation %s: \"http\" affects inbound and upstream ports and none are set", Mode))
	}
	if len(spec.Allow) > 0 && len(spec.Inbound) == 0 {
		w = append(w, fmt.Sprintf("annotation %s: no %s port the allow list applies to", Allow, Inbound))
	}
	w = append(w, edgeWarnings(spec)...)
	return w
}

// ExternalSecretName is the name of the kubernetes.io/tls Secret that holds the
// ACME certificate for a set of external hosts: "podtls-ext-" followed by the first
// 16 hex digits of SHA-256 over the sorted, lower-cased, unique hosts joined by
// "\n". Pods naming the same set share the Secret. The ACME manager uses the same
// function.
func ExternalSecretName(hosts []string) string {
	norm := make([]string, 0, len(hosts))
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h != "" && !slices.Contains(norm, h) {
			norm = append(norm, h)
		}
	}
	slices.Sort(norm)
	sum := sha256.Sum256([]byte(strings.Join(norm, "\n")))
	return "podtls-ext-" + hex.EncodeToString(sum[:8])
}

// parseBoundedDuration parses a Go duration within [lo, hi].
func parseBoundedDuration(v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration", v)
	case d < lo || d > hi:
		return 0, fmt.Errorf("%s is out of range", d)
	}
	return d, nil
}

func validateExternalHost(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return errors.New(`a wildcard is only allowed as the whole first label ("*.")`)
	}
	if err := identity.ValidateDNSName(name); err != nil {
		return err
	}
	if !strings.Contains(name, ".") {
		return errors.New("not a fully qualified public name")
	}
	return nil
}

func parsePort(s string) (int32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port 1-65535", s)
	}
	return int32(n), nil
}

// splitList splits a comma-separated annotation value, dropping blanks.
// SplitList splits a comma-separated annotation value into its trimmed,
// non-empty items.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func quote(s string) string { return strconv.Quote(s) }
