// Package tlsconfig is the one place where podtls builds a *tls.Config, for
// every binary: the sidecar's mTLS listeners and dialers, the controller's
// HTTPS servers (CA sign API, admission webhook), the agent's and the CLI's
// HTTPS clients and the ACME client. Protocol versions, key exchange, client
// authentication and peer checks live here and nowhere else. Configs point at
// a Source or a GetCertificate function, so certificates and the trust pool
// can change without rebuilding them.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/podtls/podtls/identity"
)

// Source provides the current certificates and trust pool. certs.Store
// implements it; every method must be safe for concurrent use.
type Source interface {
	// MeshCertificate is the workload's mesh certificate, nil before the first
	// valid one is loaded.
	MeshCertificate() *tls.Certificate
	// ExternalCertificate returns the external certificate whose names match
	// serverName (exact or one-label wildcard), or nil.
	ExternalCertificate(serverName string) *tls.Certificate
	// TrustPool is the current set of mesh roots; nil means "trust nothing".
	TrustPool() *x509.CertPool
}

// Options tune every config built here.
type Options struct {
	// PostQuantum prefers the hybrid X25519MLKEM768 key exchange. It costs
	// about 60 us of CPU per handshake on the machines we measured, which
	// drops full handshakes/s below nginx; off by default (see docs/sidecar.md).
	PostQuantum bool
	// NextProtos is the ALPN list (HTTP mode: h2, http/1.1). Empty in TCP
	// mode: the proxy cannot know what the app speaks.
	NextProtos []string
	// Now is the clock used for chain verification; nil means time.Now.
	Now func() time.Time
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// base holds the settings shared by every config.
func base(o Options) *tls.Config {
	c := &tls.Config{}
	Harden(c, o)
	return c
}

// Harden applies the settings every podtls TLS endpoint shares to c: TLS 1.2
// at least (1.3 whenever the peer has it), the key exchanges, the ALPN list
// when o names one, and o's clock. It is for configs another library makes,
// such as controller-runtime's webhook server; everything else starts from
// the builders below, which call it.
func Harden(c *tls.Config, o Options) {
	c.MinVersion = tls.VersionTLS12
	// X25519 first: fastest and what nearly every client offers. P-256 for
	// FIPS-minded peers. The post-quantum hybrid is opt-in (see Options).
	c.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	if o.PostQuantum {
		c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	}
	if len(o.NextProtos) > 0 {
		c.NextProtos = o.NextProtos
	}
	if o.Now != nil {
		c.Time = o.Now
	}
}

// WebServer builds the config of an HTTPS server whose clients authenticate
// by other means than a certificate (the CA's sign API takes tokens, the
// webhook is called by the API server): server certificate from
// getCertificate, no client certificate asked for.
func WebServer(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), o Options) *tls.Config {
	c := base(o)
	c.GetCertificate = getCertificate
	return c
}

// WebServerOptionalClientCert builds the config of an HTTPS server whose
// clients authenticate either by other means (the CA's sign API takes
// tokens) or by their mesh certificate (the CA's discovery API): a client
// certificate is requested, not required. A client that sends none is
// served as by WebServer. One that sends a certificate must chain, for
// client authentication, to roots() (read per handshake, resumed sessions
// included, so rotated roots apply at once) or the handshake fails: a token
// client must not present a foreign certificate. Which identities may use
// which path is the handler's decision (see VerifyClient).
func WebServerOptionalClientCert(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), roots func() *x509.CertPool, o Options) *tls.Config {
	c := WebServer(getCertificate, o)
	// RequestClientCert + VerifyConnection instead of VerifyClientCertIfGiven
	// + ClientCAs: the pool would be frozen at build time.
	c.ClientAuth = tls.RequestClientCert
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return verifyChain(roots(), cs.PeerCertificates, "", x509.ExtKeyUsageClientAuth, o.now())
	}
	return c
}

// PublicClient builds the config of a client of a server outside the mesh,
// such as an ACME directory: roots verify the server, nil roots mean the
// system's. serverName overrides the name checked (empty: the dialled host).
func PublicClient(roots *x509.CertPool, serverName string, o Options) *tls.Config {
	c := base(o)
	c.RootCAs = roots
	c.ServerName = serverName
	return c
}

// ErrNoCertificate is returned to a handshake when no certificate is loaded yet.
var ErrNoCertificate = errors.New("tlsconfig: no certificate loaded")

// Server builds the inbound config. A client whose SNI names an external
// certificate gets that certificate and no client-certificate request (a
// public edge); every other client must present a mesh certificate that
// chains to the current trust pool and whose SPIFFE ID allow accepts.
func Server(src Source, allow *identity.Matcher, o Options) *tls.Config {
	mesh := base(o)
	// RequireAnyClientCert + VerifyConnection instead of ClientCAs: the pool
	// is read per handshake, so a reloaded trust bundle applies immediately,
	// and VerifyConnection also runs on resumed sessions.
	mesh.ClientAuth = tls.RequireAnyClientCert
	mesh.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := src.MeshCertificate(); c != nil {
			return c, nil
		}
		return nil, ErrNoCertificate
	}
	mesh.VerifyConnection = func(cs tls.ConnectionState) error {
		return VerifyClient(src.TrustPool(), allow, cs.PeerCertificates, o.now())
	}

	edge := base(o)
	edge.ClientAuth = tls.NoClientCert
	edge.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := src.ExternalCertificate(hello.ServerName); c != nil {
			return c, nil
		}
		return nil, ErrNoCertificate
	}

	root := base(o)
	// Session tickets stay on: configs returned by GetConfigForClient share
	// the root config's automatically rotated ticket keys.
	root.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.ServerName != "" && src.ExternalCertificate(hello.ServerName) != nil {
			return edge, nil
		}
		return mesh, nil
	}
	return root
}

// Client builds an outbound config: present the mesh certificate, verify the
// upstream's chain against the current trust pool, its host name and, when
// pinnedID is set, its SPIFFE ID.
func Client(src Source, serverName, pinnedID string, o Options) *tls.Config {
	c := base(o)
	c.ServerName = serverName
	// Verification is done in VerifyConnection against the live trust pool;
	// the built-in check would freeze RootCAs at build time. Nothing is
	// skipped: VerifyServer checks chain, name and pinned identity.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return VerifyServer(src.TrustPool(), serverName, pinnedID, cs.PeerCertificates, o.now())
	}
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert := src.MeshCertificate(); cert != nil {
			return cert, nil
		}
		return nil, ErrNoCertificate
	}
	// Resumption saves the upstream a full mTLS handshake on every new
	// connection from the app; VerifyConnection still runs on resumption.
	c.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	return c
}

// Egress builds the config of a sidecar outbound to a TLS service outside
// the mesh (tls:// upstreams): no client certificate (the pod's identity
// stays in the mesh), the server's chain verified against roots (the system
// roots in the sidecar; nil trusts nothing) and its name against serverName,
// with the same failure reasons as mesh upstreams. Sessions are cached per
// config and verified again on resumption.
func Egress(roots *x509.CertPool, serverName string, o Options) *tls.Config {
	c := base(o)
	c.ServerName = serverName
	// Verified in VerifyConnection, so failures carry a VerifyError reason
	// (unknown_ca, name_mismatch, expired) like mesh upstreams; nothing is
	// skipped.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return VerifyServer(roots, serverName, "", cs.PeerCertificates, o.now())
	}
	c.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	return c
}

// HTTPSClient builds the config the agent uses to reach the CA: ordinary
// server verification against roots; nil roots trust nothing (never the
// system's: the CA is ours).
func HTTPSClient(roots *x509.CertPool, o Options) *tls.Config {
	c := base(o)
	if roots == nil {
		roots = x509.NewCertPool()
	}
	c.RootCAs = roots
	return c
}

// ProbeClient builds the config of the sidecar's HTTPS app probes: the kubelet does not
// verify the certificate of an HTTPS probe target, and the sidecar, probing the app on
// loopback on the kubelet's behalf, does the same. Nothing else may use it.
func ProbeClient(o Options) *tls.Config {
	c := base(o)
	c.InsecureSkipVerify = true //nolint:gosec // the kubelet's HTTPS probe semantics, loopback only
	return c
}

// VerifyError is a refused peer, with a stable reason used as metric label.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string { return "peer refused (" + e.Reason + "): " + e.Err.Error() }
func (e *VerifyError) Unwrap() error { return e.Err }

// Reasons of VerifyError.
const (
	ReasonNoClientCert    = "no_client_cert"
	ReasonExpired         = "expired"
	ReasonUnknownCA       = "unknown_ca"
	ReasonBadChain        = "bad_chain"
	ReasonNoSPIFFEID      = "no_spiffe_id"
	ReasonNotAllowed      = "identity_not_allowed"
	ReasonNameMismatch    = "name_mismatch"
	ReasonPinnedIDMismach = "pinned_id_mismatch"
)

// VerifyClient checks a client chain and its identity.
func VerifyClient(roots *x509.CertPool, allow *identity.Matcher, chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return &VerifyError{Reason: ReasonNoClientCert, Err: errors.New("no client certificate")}
	}
	if err := verifyChain(roots, chain, "", x509.ExtKeyUsageClientAuth, now); err != nil {
		return err
	}
	id, err := SPIFFEID(chain[0])
	if err != nil {
		return &VerifyError{Reason: ReasonNoSPIFFEID, Err: err}
	}
	if !allow.Allows(id) {
		return &VerifyError{Reason: ReasonNotAllowed, Err: fmt.Errorf("identity %s is not in --allow", id)}
	}
	return nil
}

// VerifyServer checks an upstream chain, its host name and the pinned ID.
func VerifyServer(roots *x509.CertPool, serverName, pinnedID string, chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return &VerifyError{Reason: ReasonBadChain, Err: errors.New("no server certificate")}
	}
	if err := verifyChain(roots, chain, serverName, x509.ExtKeyUsageServerAuth, now); err != nil {
		return err
	}
	if pinnedID != "" {
		id, err := SPIFFEID(chain[0])
		if err != nil {
			return &VerifyError{Reason: ReasonPinnedIDMismach, Err: err}
		}
		if id != pinnedID {
			return &VerifyError{Reason: ReasonPinnedIDMismach, Err: fmt.Errorf("upstream identity %s, want %s", id, pinnedID)}
		}
	}
	return nil
}

func verifyChain(roots *x509.CertPool, chain []*x509.Certificate, dnsName string, usage x509.ExtKeyUsage, now time.Time) error {
	if roots == nil {
		roots = x509.NewCertPool() // never fall back to the system roots
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       dnsName,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err == nil {
		return nil
	}
	reason := ReasonBadChain
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		reason = ReasonExpired
	case errors.As(err, &ua):
		reason = ReasonUnknownCA
	case errors.As(err, &host):
		reason = ReasonNameMismatch
	}
	return &VerifyError{Reason: reason, Err: err}
}

// SPIFFEID returns the single spiffe:// URI SAN of cert.
func SPIFFEID(cert *x509.Certificate) (string, error) {
	id := ""
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if id != "" {
			return "", errors.New("certificate has more than one SPIFFE ID")
		}
		id = u.String()
	}
	if id == "" {
		return "", errors.New("certificate has no SPIFFE ID URI SAN")
	}
	if _, err := identity.Parse(id); err != nil {
		return "", err
	}
	return id, nil
}

// FailureReason maps a handshake error to a short, stable metric label.
func FailureReason(err error) string {
	var ve *VerifyError
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ve):
		return ve.Reason
	case errors.Is(err, ErrNoCertificate):
		return "no_certificate_loaded"
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return ReasonNoClientCert
	case errors.As(err, &rh):
		return "not_tls"
	case errors.As(err, &alert):
		return "peer_alert"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "peer_closed"
	}
	return "tls_error"
}
