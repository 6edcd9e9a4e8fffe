package contract

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/identity"
)

// PublicScheme marks an upstreams entry as a TLS service outside the mesh:
// the sidecar originates TLS without a client certificate and verifies the
// name against the system roots.
const PublicScheme = "tls://"

// String renders u in the podtls.io/upstreams form.
func (u Upstream) String() string {
	s := u.Host + ":" + strconv.Itoa(int(u.Port)) + "@" + strconv.Itoa(int(u.LocalPort))
	if u.Public {
		s = PublicScheme + s
	}
	if u.Protocol != "" {
		s += "/" + u.Protocol
	}
	s += u.Policy()
	if u.ID != "" {
		s += "#" + u.ID
	}
	return s
}

// Policy renders u's request policy as the "?timeout=DUR&retries=N" suffix
// of the annotation and the sidecar flag ("" when none is set).
func (u Upstream) Policy() string {
	var q []string
	if u.Timeout > 0 {
		q = append(q, "timeout="+u.Timeout.String())
	}
	if u.Retries > 0 {
		q = append(q, "retries="+strconv.Itoa(int(u.Retries)))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + strings.Join(q, "&")
}

// Limits of an upstream's request policy.
const (
	MinUpstreamTimeout = time.Millisecond
	MaxUpstreamTimeout = time.Hour
	MaxUpstreamRetries = 5
)

// ParsePolicy parses the query after "?" of an upstreams entry:
// timeout=DUR and retries=N, each at most once, "&"-separated.
func ParsePolicy(q string) (timeout time.Duration, retries int32, err error) {
	seen := map[string]bool{}
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if seen[k] {
			return 0, 0, fmt.Errorf("%q given twice", k)
		}
		seen[k] = true
		switch k {
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < MinUpstreamTimeout || d > MaxUpstreamTimeout {
				return 0, 0, fmt.Errorf("timeout %q: want a Go duration between %s and %s", v, MinUpstreamTimeout, MaxUpstreamTimeout)
			}
			timeout = d
		case "retries":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > MaxUpstreamRetries {
				return 0, 0, fmt.Errorf("retries %q: want an integer between 0 and %d", v, MaxUpstreamRetries)
			}
			retries = int32(n)
		default:
			return 0, 0, fmt.Errorf("%q: want timeout=DUR or retries=N", kv)
		}
	}
	return timeout, retries, nil
}

// InCluster reports whether host is a cluster DNS name a mesh certificate
// can carry: a Service or a pod behind a headless Service
// (NAME.NS.svc[.CLUSTER-DOMAIN], HOSTNAME.SUBDOMAIN.NS.svc[...]) or a pod
// DNS name (A-B-C-D.NS.pod[.CLUSTER-DOMAIN]). An empty clusterDomain means
// the default.
func InCluster(host, clusterDomain string) bool {
	if clusterDomain == "" {
		clusterDomain = identity.DefaultClusterDomain
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if _, err := netip.ParseAddr(host); err != nil && strings.HasSuffix(host, "."+clusterDomain) {
		host = strings.TrimSuffix(host, "."+clusterDomain)
	}
	for _, kind := range []string{".svc", ".pod"} {
		if rest, ok := strings.CutSuffix(host, kind); ok {
			// At least NAME.NS before the suffix.
			return strings.Count(rest, ".") >= 1 && !strings.HasPrefix(rest, ".") && !strings.Contains(rest, "..")
		}
	}
	return false
}

// Protocols of an upstream: UpstreamTCP keeps an app connection on one
// upstream connection (L4); UpstreamHTTP balances each HTTP request over the
// upstream Service's endpoints. Unset, the pod's mode decides (tcp: L4,
// http: balanced).
const (
	UpstreamTCP  = "tcp"
	UpstreamHTTP = "http"
)

// parseUpstream parses one [tls://]HOST:PORT@LOCALPORT[/PROTOCOL][?POLICY][#SPIFFE-ID] entry. A
// mesh upstream must be a cluster name (InCluster) or carry a pinned SPIFFE
// ID (a mesh workload outside the cluster): anything else would be verified
// against the mesh roots and fail at runtime with unknown_ca.
func parseUpstream(item, clusterDomain string) (Upstream, error) {
	rest, id, hasID := strings.Cut(item, "#")
	public := false
	if scheme, after, ok := strings.Cut(rest, "://"); ok {
		if !strings.EqualFold(scheme+"://", PublicScheme) {
			return Upstream{}, fmt.Errorf("scheme %q: the only scheme is %q (TLS to a service outside the mesh)", scheme, PublicScheme)
		}
		rest, public = after, true
	}
	hostPort, local, ok := strings.Cut(rest, "@")
	if !ok {
		return Upstream{}, errors.New("missing @LOCALPORT")
	}
	i := strings.LastIndex(hostPort, ":")
	if i < 0 {
		return Upstream{}, errors.New("missing :PORT after the host")
	}
	host := strings.TrimSuffix(strings.ToLower(hostPort[:i]), ".")
	if err := identity.ValidateDNSName(host); err != nil {
		return Upstream{}, fmt.Errorf("host %q: %v", host, err)
	}
	port, err := parsePort(hostPort[i+1:])
	if err != nil {
		return Upstream{}, fmt.Errorf("port: %v", err)
	}
	local, query, hasQuery := strings.Cut(local, "?")
	var timeout time.Duration
	var retries int32
	if hasQuery {
		var err error
		if timeout, retries, err = ParsePolicy(query); err != nil {
			return Upstream{}, fmt.Errorf("request policy after '?': %v", err)
		}
	}
	local, proto, hasProto := strings.Cut(local, "/")
	proto = strings.ToLower(proto)
	if hasProto && proto != UpstreamTCP && proto != UpstreamHTTP {
		return Upstream{}, fmt.Errorf("protocol %q after the local port: want %s or %s", proto, UpstreamTCP, UpstreamHTTP)
	}
	lp, err := parsePort(local)
	if err != nil {
		return Upstream{}, fmt.Errorf("local port: %v", err)
	}
	u := Upstream{Host: host, Port: port, LocalPort: lp, Public: public, Protocol: proto, Timeout: timeout, Retries: retries}
	if hasID {
		if public {
			return Upstream{}, fmt.Errorf("a %s upstream is outside the mesh and has no SPIFFE ID to pin; drop %q", PublicScheme, "#"+id)
		}
		if _, err := identity.Parse(id); err != nil {
			return Upstream{}, err
		}
		u.ID = id
	}
	if !public && u.ID == "" && !InCluster(host, clusterDomain) {
		if clusterDomain == "" {
			clusterDomain = identity.DefaultClusterDomain
		}
		pub := u
		pub.Public = true
		return Upstream{}, fmt.Errorf("%s is not a cluster name (NAME.NS.svc[.%s] or a pod DNS name) and mesh upstreams are verified against the mesh roots only, so every call would fail; "+
			"for a TLS service outside the mesh write %q (TLS verified with the system roots, no client certificate); "+
			"for a mesh workload outside the cluster pin its identity with #SPIFFE-ID", host, clusterDomain, pub.String())
	}
	return u, nil
}
