package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/identity"
)

// Inbound is one --inbound LISTEN=TARGET[/PROTOCOL]: a TLS listener
// forwarding plaintext to the app.
type Inbound struct {
	Listen string // host:port, host may be empty (all addresses)
	Target string // host:port of the app, usually 127.0.0.1:<port>
	// Protocol is what the app speaks on Target: ProtoTCP, ProtoHTTP1,
	// ProtoH2C, or empty for the proxy's mode (tcp mode: tcp; http mode: http1).
	Protocol string
}

// App protocols of an inbound port.
const (
	ProtoTCP   = "tcp"   // opaque bytes, spliced
	ProtoHTTP1 = "http1" // plaintext HTTP/1.1
	ProtoH2C   = "h2c"   // plaintext HTTP/2 (gRPC)
)

// Protocols lists the valid app protocols, for messages.
const Protocols = ProtoTCP + ", " + ProtoHTTP1 + " or " + ProtoH2C

// ValidProtocol reports whether p names an app protocol.
func ValidProtocol(p string) bool { return p == ProtoTCP || p == ProtoHTTP1 || p == ProtoH2C }

// Outbound is one --outbound LISTEN=[tls://]HOST:PORT[/PROTOCOL][#SPIFFE-ID]:
// a plaintext loopback listener for the app, originating mTLS to the
// upstream, or, with tls://, TLS without a client certificate to a service
// outside the mesh, verified with the system roots.
type Outbound struct {
	Listen     string // loopback host:port
	Upstream   string // host:port dialed
	ServerName string // host part, verified against the upstream certificate
	PinnedID   string // optional SPIFFE ID the upstream must present
	Public     bool   // tls://: outside the mesh
	// Protocol is OutTCP (one upstream connection per app connection) or
	// OutHTTP (each request balanced over the upstream's endpoints); empty
	// is the proxy's mode.
	Protocol string
	// Timeout bounds a balanced request's wait for its response headers
	// (0: none); Retries is how often an idempotent request without a body
	// is sent again after it failed (contract.ParsePolicy reads both).
	Timeout time.Duration
	Retries int
}

// Protocols of an outbound listener.
const (
	OutTCP  = "tcp"  // L4: bytes spliced, the connection pinned to one upstream
	OutHTTP = "http" // L7: HTTP/1.1 or h2c from the app, each request balanced
)

// Balanced reports whether o forwards each request on its own (OutHTTP, or
// the http mode's default).
func (o *Outbound) Balanced(mode string) bool {
	if o.Protocol != "" {
		return o.Protocol == OutHTTP
	}
	return mode == ModeHTTP
}

// PublicScheme prefixes the upstream of a Public outbound.
const PublicScheme = "tls://"

// appProtocol is in's app protocol, the mode's default when unset.
func (in *Inbound) appProtocol(mode string) string {
	switch {
	case in.Protocol != "":
		return in.Protocol
	case mode == ModeHTTP:
		return ProtoHTTP1
	default:
		return ProtoTCP
	}
}

// servesHTTP reports whether the proxy terminates HTTP on in (http mode, an
// HTTP app protocol); otherwise it splices bytes.
func (in *Inbound) servesHTTP(mode string) bool {
	return mode == ModeHTTP && in.appProtocol(mode) != ProtoTCP
}

// alpn is the ALPN list in offers TLS clients: what the proxy speaks to
// them. Terminating HTTP, that is h2 and http/1.1 whatever the app speaks;
// splicing, the app's own protocol, or tcpALPN (--alpn) for opaque bytes.
func (in *Inbound) alpn(mode string, tcpALPN []string) []string {
	if in.servesHTTP(mode) {
		return []string{"h2", "http/1.1"}
	}
	switch in.appProtocol(mode) {
	case ProtoH2C:
		return []string{"h2"}
	case ProtoHTTP1:
		return []string{"http/1.1"}
	default:
		return tcpALPN
	}
}

func (in Inbound) String() string {
	if in.Protocol != "" {
		return in.Listen + "=" + in.Target + "/" + in.Protocol
	}
	return in.Listen + "=" + in.Target
}

func (o Outbound) String() string {
	up := o.Upstream
	if o.Public {
		up = PublicScheme + up
	}
	if o.Protocol != "" {
		up += "/" + o.Protocol
	}
	if o.PinnedID != "" {
		return o.Listen + "=" + up + "#" + o.PinnedID
	}
	return o.Listen + "=" + up
}

// ParseInbound parses LISTEN=TARGET[/PROTOCOL], e.g. ":8443=127.0.0.1:8080"
// or ":8443=127.0.0.1:8080/h2c".
func ParseInbound(s string) (Inbound, error) {
	listen, target, ok := strings.Cut(s, "=")
	if !ok {
		return Inbound{}, fmt.Errorf("%q: want LISTEN=TARGET[/PROTOCOL], e.g. :8443=127.0.0.1:8080 or :8443=127.0.0.1:8080/h2c", s)
	}
	target, proto, hasProto := strings.Cut(target, "/")
	if hasProto && !ValidProtocol(proto) {
		return Inbound{}, fmt.Errorf("%q: protocol %q after '/': want %s", s, proto, Protocols)
	}
	if err := checkListen(listen); err != nil {
		return Inbound{}, fmt.Errorf("%q: listen address: %w", s, err)
	}
	if _, err := checkHostPort(target); err != nil {
		return Inbound{}, fmt.Errorf("%q: target: %w", s, err)
	}
	return Inbound{Listen: listen, Target: target, Protocol: proto}, nil
}

// ParseOutbound parses LISTEN=[tls://]HOST:PORT[/PROTOCOL][?POLICY][#SPIFFE-ID], e.g.
// "127.0.0.1:9001=preference.demo.svc:8443" or ":9001=preference.demo.svc:8443/http".
// LISTEN must be loopback (a bare
// ":9001" is "localhost:9001": 127.0.0.1 and, when the pod has it, ::1):
// anyone reaching it would borrow the pod's identity.
func ParseOutbound(s string) (Outbound, error) {
	listen, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Outbound{}, fmt.Errorf("%q: want LISTEN=[tls://]HOST:PORT[/PROTOCOL][?timeout=DUR&retries=N][#SPIFFE-ID], e.g. 127.0.0.1:9001=preference.demo.svc:8443", s)
	}
	upstream, pinned, hasPin := strings.Cut(rest, "#")

	public := false
	if scheme, after, ok := strings.Cut(upstream, "://"); ok {
		if scheme+"://" != PublicScheme {
			return Outbound{}, fmt.Errorf("%q: scheme %q: the only scheme is %s (TLS to a service outside the mesh)", s, scheme, PublicScheme)
		}
		if hasPin {
			return Outbound{}, fmt.Errorf("%q: a %s upstream is outside the mesh and has no SPIFFE ID to pin", s, PublicScheme)
		}
		upstream, public = after, true
	}
	upstream, query, hasQuery := strings.Cut(upstream, "?")
	var timeout time.Duration
	var retries int32
	if hasQuery {
		var err error
		if timeout, retries, err = contract.ParsePolicy(query); err != nil {
			return Outbound{}, fmt.Errorf("%q: request policy after '?': %w", s, err)
		}
	}
	upstream, proto, hasProto := strings.Cut(upstream, "/")
	if hasProto && proto != OutTCP && proto != OutHTTP {
		return Outbound{}, fmt.Errorf("%q: protocol %q after '/': want %s or %s", s, proto, OutTCP, OutHTTP)
	}
	if err := checkListen(listen); err != nil {
		return Outbound{}, fmt.Errorf("%q: listen address: %w", s, err)
	}
	host, port, _ := net.SplitHostPort(listen)
	switch {
	case host == "" || host == Loopback:
		listen = net.JoinHostPort(Loopback, port) // 127.0.0.1 and, when present, ::1
	default:
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return Outbound{}, fmt.Errorf("%q: listen address %q must be loopback (127.0.0.1 or ::1): a plaintext outbound port on another address lets anyone use this pod's identity", s, listen)
		}
	}
	serverName, err := checkHostPort(upstream)
	if err != nil {
		return Outbound{}, fmt.Errorf("%q: upstream: %w", s, err)
	}
	if hasPin {
		if _, err := identity.Parse(pinned); err != nil {
			return Outbound{}, fmt.Errorf("%q: pinned identity after '#': %w", s, err)
		}
	}
	if hasQuery && proto == OutTCP {
		return Outbound{}, fmt.Errorf("%q: a request timeout or retries need protocol %s: %s forwards connections", s, OutHTTP, OutTCP)
	}
	return Outbound{Listen: listen, Upstream: upstream, ServerName: serverName, PinnedID: pinned, Public: public, Protocol: proto,
		Timeout: timeout, Retries: int(retries)}, nil
}

func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if err := checkPort(port); err != nil {
		return err
	}
	if host == "" || host == "localhost" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("host %q: want an IP address, \"localhost\" or nothing (all addresses)", host)
	}
	return nil
}

// checkHostPort validates host:port and returns the host.
func checkHostPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if err := checkPort(port); err != nil {
		return "", err
	}
	if host == "" {
		return "", errors.New("host is empty")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return host, nil
	}
	if err := identity.ValidateDNSName(strings.ToLower(host)); err != nil {
		return "", fmt.Errorf("host %q: %w", host, err)
	}
	return host, nil
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return fmt.Errorf("port %q: want a number from 1 to 65535", p)
	}
	return nil
}
