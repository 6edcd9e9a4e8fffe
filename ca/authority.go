// Package ca is podtls's internal certificate authority: it keeps a root and
// an intermediate in a Secret (generated on first start, or brought by the
// user), and signs short-lived workload certificates from CSRs after checking
// them against the caller's identity: the SPIFFE ID as URI SAN, DNS names of
// the caller's namespace only, a bounded lifetime.
//
// Certificates are built with smallstep's go.step.sm/crypto/x509util, and the
// names are checked a second time by smallstep's name-policy engine
// (github.com/smallstep/certificates/policy). The full smallstep authority is
// not used: podtls has no provisioners, database or KMS to manage, and
// authenticates callers with Kubernetes TokenReview instead (see ca/server).
package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/podtls/podtls/identity"
)

// Policy defaults.
const (
	DefaultTTL = 24 * time.Hour
	MinTTL     = time.Hour
	MaxTTL     = 7 * 24 * time.Hour
	// Backdate is subtracted from NotBefore so nodes whose clocks run a little
	// behind accept a certificate as soon as it is issued.
	Backdate = time.Minute
	// MaxDNSNames bounds the DNS SANs of one certificate.
	MaxDNSNames = 100
)

// Errors of Sign, to be matched with errors.Is. The server maps them to HTTP
// status codes (400, 403, 503).
var (
	// ErrBadRequest: the CSR is malformed, its signature is wrong or its key
	// type is not accepted.
	ErrBadRequest = errors.New("bad request")
	// ErrForbidden: the CSR asks for a name the caller may not have.
	ErrForbidden = errors.New("forbidden")
	// ErrNotReady: a cache the CA depends on has not synced yet; retry.
	ErrNotReady = errors.New("not ready")
	// ErrKeyType: the request's key type is not accepted (it also wraps
	// ErrBadRequest).
	ErrKeyType = errors.New("unsupported key type")
)

// Config is the signing policy of an Authority. Zero values take defaults.
type Config struct {
	// TrustDomain of SPIFFE IDs; identity.DefaultTrustDomain if empty.
	TrustDomain string
	// ClusterDomain is the DNS suffix of Services; identity.DefaultClusterDomain if empty.
	ClusterDomain string
	// DefaultTTL, MinTTL, MaxTTL bound leaf lifetimes.
	DefaultTTL, MinTTL, MaxTTL time.Duration
	// Backdate of NotBefore; Backdate if zero.
	Backdate time.Duration
	// Pods tells what the cluster says about the calling pod: the Services
	// selecting it and its own hostname, whose DNS names are added to its
	// certificate. Optional: without it only the CSR's names are checked.
	Pods PodLookup
	// Now returns the current time; time.Now if nil.
	Now func() time.Time
}

// PodFacts is what the cluster says about a calling pod, as far as its DNS
// names go. The policy (podDNSNames, leafTemplate) decides from these facts;
// a PodLookup only reports them.
type PodFacts struct {
	// Services are the names of the Services of the pod's namespace whose
	// selector matches the pod.
	Services []string
	// Headless are those of Services that are headless (clusterIP None).
	Headless []string
	// Hostname and Subdomain are the pod's spec.hostname and spec.subdomain
	// (a StatefulSet sets them to the pod's name and its serviceName).
	Hostname, Subdomain string
}

// PodLookup finds the PodFacts of a pod. Implementations read from a cache,
// not from the API server per call.
type PodLookup interface {
	// LookupPod returns the facts of pod podName in namespace. podUID, if
	// set, guards against a cached pod of the same name from an earlier
	// incarnation. It returns an error wrapping ErrNotReady until its cache
	// has synced.
	LookupPod(ctx context.Context, namespace, podName, podUID string) (PodFacts, error)
}

// Caller is an authenticated workload: a service account, and the pod the
// token was bound to (empty for tokens not bound to a pod).
type Caller struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
}

// Issued is a signed leaf with what the caller needs to use it.
type Issued struct {
	// Certificate is the parsed leaf.
	Certificate *x509.Certificate
	// ChainPEM is the leaf, then the intermediate(s); not the root.
	ChainPEM []byte
	// TrustBundlePEM holds the roots.
	TrustBundlePEM []byte
}

// Authority signs certificates. It is safe for concurrent use; its material
// can be replaced at run time with SetMaterial.
type Authority struct {
	cfg   Config
	state atomic.Pointer[state]
}

// state is everything derived from one Material, swapped as a whole.
type state struct {
	m         *Material
	chainPEM  []byte
	chainDER  [][]byte
	bundlePEM []byte
	pool      *x509.CertPool
}

// New returns an Authority signing with m under the policy cfg.
func New(m *Material, cfg Config) (*Authority, error) {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = identity.DefaultTrustDomain
	}
	if err := identity.ValidateTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca config: %w", err)
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = identity.DefaultClusterDomain
	}
	if err := identity.ValidateDNSName(cfg.ClusterDomain); err != nil {
		return nil, fmt.Errorf("ca config: cluster domain %q: %w", cfg.ClusterDomain, err)
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.MinTTL == 0 {
		cfg.MinTTL = MinTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = MaxTTL
	}
	if cfg.MinTTL > cfg.MaxTTL || cfg.DefaultTTL < cfg.MinTTL || cfg.DefaultTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("ca config: need min TTL (%s) <= default TTL (%s) <= max TTL (%s)", cfg.MinTTL, cfg.DefaultTTL, cfg.MaxTTL)
	}
	if cfg.Backdate == 0 {
		cfg.Backdate = Backdate
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authority{cfg: cfg}
	if err := a.SetMaterial(m); err != nil {
		return nil, err
	}
	return a, nil
}

// SetMaterial validates m and makes it the signing material.
func (a *Authority) SetMaterial(m *Material) error {
	if err := m.Validate(a.cfg.Now()); err != nil {
		return err
	}
	s := &state{m: m, chainPEM: m.ChainPEM(), bundlePEM: m.TrustBundlePEM(), pool: x509.NewCertPool()}
	for _, c := range append([]*x509.Certificate{m.Intermediate}, m.Chain...) {
		s.chainDER = append(s.chainDER, c.Raw)
	}
	for _, r := range m.bundle() {
		s.pool.AddCert(r)
	}
	a.state.Store(s)
	return nil
}

// Material returns the current signing material. Do not modify it.
func (a *Authority) Material() *Material { return a.state.Load().m }

// TrustBundlePEM returns the PEM roots clients should trust.
func (a *Authority) TrustBundlePEM() []byte {
	return bytes.Clone(a.state.Load().bundlePEM)
}

// TrustPool returns the roots as a pool, for verifying issued certificates.
func (a *Authority) TrustPool() *x509.CertPool { return a.state.Load().pool.Clone() }

// IntermediateNotAfter is the expiry of the signing intermediate; leaves never
// outlive it, and operators should be warned well before it.
func (a *Authority) IntermediateNotAfter() time.Time {
	return a.state.Load().m.Intermediate.NotAfter
}

// TrustDomain is the SPIFFE trust domain the Authority issues IDs in.
func (a *Authority) TrustDomain() string { return a.cfg.TrustDomain }

// ClusterDomain is the DNS suffix of Services.
func (a *Authority) ClusterDomain() string { return a.cfg.ClusterDomain }

// Sign checks a PEM CSR against the caller's identity and signs it for ttl
// (0 means the default; the value is clamped to the policy bounds). The
// certificate gets the caller's SPIFFE ID as its only URI SAN, the CSR's DNS
// names (each a Service name of the caller's namespace or the pod's own
// name), the names of the Services that select the caller's pod and, behind
// a headless Service, the pod's own <hostname>.<subdomain> names.
func (a *Authority) Sign(ctx context.Context, caller Caller, csrPEM []byte, ttl time.Duration) (*Issued, error) {
	id, err := identity.New(a.cfg.TrustDomain, caller.Namespace, caller.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("%w: caller identity: %w", ErrForbidden, err)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	pod, err := a.podFacts(ctx, caller)
	if err != nil {
		return nil, err
	}
	s := a.state.Load()
	tmpl, err := a.leafTemplate(id, csr, pod, ttl, s.m.Intermediate.NotAfter)
	if err != nil {
		return nil, err
	}
	return a.sign(s, tmpl)
}

// podFacts asks the PodLookup about the caller's pod (zero facts without
// one, or for a caller not bound to a pod).
func (a *Authority) podFacts(ctx context.Context, caller Caller) (PodFacts, error) {
	if a.cfg.Pods == nil || caller.PodName == "" {
		return PodFacts{}, nil
	}
	pod, err := a.cfg.Pods.LookupPod(ctx, caller.Namespace, caller.PodName, caller.PodUID)
	if err != nil {
		return PodFacts{}, fmt.Errorf("look up pod %s/%s: %w", caller.Namespace, caller.PodName, err)
	}
	return pod, nil
}

func (a *Authority) sign(s *state, tmpl *x509.Certificate) (*Issued, error) {
	leaf, err := x509util.CreateCertificate(tmpl, s.m.Intermediate, tmpl.PublicKey, s.m.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	var b bytes.Buffer
	b.Grow(len(s.chainPEM) + 2*len(leaf.Raw))
	writeCertsPEM(&b, []*x509.Certificate{leaf})
	b.Write(s.chainPEM)
	return &Issued{Certificate: leaf, ChainPEM: b.Bytes(), TrustBundlePEM: s.bundlePEM}, nil
}

// IssueServing issues a TLS serving certificate for the controller's own
// endpoints (the CA's HTTPS server, the webhook). Unlike Sign, the key is
// generated here, in the controller process, and no namespace rule applies:
// only the controller calls it. ttl is clamped like Sign's.
func (a *Authority) IssueServing(dnsNames []string, ips []net.IP, ttl time.Duration) (*tls.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, errors.New("issue serving certificate: no DNS names or IP addresses")
	}
	for _, n := range dnsNames {
		if err := identity.ValidateDNSName(n); err != nil {
			return nil, fmt.Errorf("issue serving certificate: DNS name %q: %w", n, err)
		}
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: generate key: %w", err)
	}
	s := a.state.Load()
	now := a.cfg.Now()
	notAfter := capTime(now.Add(a.clampTTL(ttl)), s.m.Intermediate.NotAfter)
	c := &x509util.Certificate{
		DNSNames:    dnsNames,
		IPAddresses: ips,
		NotBefore:   now.Add(-a.cfg.Backdate),
		NotAfter:    notAfter,
		KeyUsage:    x509util.KeyUsage(x509.KeyUsageDigitalSignature),
		ExtKeyUsage: x509util.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		PublicKey:   key.Public(),
	}
	if len(dnsNames) > 0 {
		c.Subject.CommonName = dnsNames[0]
	}
	issued, err := a.sign(s, c.GetCertificate())
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: append([][]byte{issued.Certificate.Raw}, s.chainDER...),
		PrivateKey:  crypto.PrivateKey(key),
		Leaf:        issued.Certificate,
	}, nil
}

func (a *Authority) clampTTL(ttl time.Duration) time.Duration {
	switch {
	case ttl <= 0:
		return a.cfg.DefaultTTL
	case ttl < a.cfg.MinTTL:
		return a.cfg.MinTTL
	case ttl > a.cfg.MaxTTL:
		return a.cfg.MaxTTL
	}
	return ttl
}

func capTime(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}
