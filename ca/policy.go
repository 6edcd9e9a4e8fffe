package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/smallstep/certificates/policy"
	"go.step.sm/crypto/x509util"

	"github.com/podtls/podtls/identity"
)

// RSA key sizes accepted in CSRs. The upper bound keeps signature checks cheap.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// parseCSR decodes exactly one PEM "CERTIFICATE REQUEST" block, checks that
// its key type is accepted and that it is signed by that key.
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: csr: no PEM block found", ErrBadRequest)
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: csr: PEM block is %q, want \"CERTIFICATE REQUEST\"", ErrBadRequest, block.Type)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("%w: csr: unexpected data after the PEM block", ErrBadRequest)
	}
	return parseCSRDER(block.Bytes)
}

// parseCSRDER parses a DER CSR and checks its key type, signature and SAN
// kinds.
func parseCSRDER(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %w", ErrBadRequest, err)
	}
	// The key type is checked before the signature so an oversized RSA key
	// costs nothing.
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: csr: signature: %w", ErrBadRequest, err)
	}
	if err := checkSANTypes(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

// checkKey accepts ECDSA P-256/P-384, Ed25519 and RSA of 2048 to 8192 bits.
func checkKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: %w: csr: ECDSA curve %s not accepted (P-256, P-384)", ErrBadRequest, ErrKeyType, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return fmt.Errorf("%w: %w: csr: RSA key of %d bits not accepted (%d to %d)", ErrBadRequest, ErrKeyType, n, minRSABits, maxRSABits)
		}
		return nil
	default:
		return fmt.Errorf("%w: %w: csr: key type %T not accepted (ECDSA P-256/P-384, Ed25519, RSA >= 2048)", ErrBadRequest, ErrKeyType, pub)
	}
}

// checkSANTypes rejects SAN kinds the standard parser drops silently
// (otherName, directoryName, registeredID, ...): only dNSName, uniformResourceIdentifier,
// and the kinds the parser exposes (checked later) may appear.
func checkSANTypes(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &names)
		if err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: csr: malformed subjectAltName extension", ErrBadRequest)
		}
		for _, n := range names {
			// GeneralName tags: 1 rfc822Name, 2 dNSName, 6 URI, 7 iPAddress.
			if n.Class != asn1.ClassContextSpecific || (n.Tag != 1 && n.Tag != 2 && n.Tag != 6 && n.Tag != 7) {
				return fmt.Errorf("%w: csr: subjectAltName of type %d not allowed (DNS names and the SPIFFE ID only)", ErrForbidden, n.Tag)
			}
		}
	}
	return nil
}

// podDNSNames are the pod's own DNS names, <hostname>.<subdomain>.<ns>.svc
// and the same under clusterDomain, or none. Kubernetes DNS publishes them
// only when a headless Service named like the subdomain selects the pod, so
// the CA grants them only then: a hostname and subdomain alone are anyone's
// to write into a pod spec. p comes from the cluster (the pod and Services of
// the caller's namespace), never from the request.
func podDNSNames(p PodFacts, ns, clusterDomain string) []string {
	if p.Hostname == "" || p.Subdomain == "" || !slices.Contains(p.Headless, p.Subdomain) {
		return nil
	}
	names, err := identity.PodDNSNames(p.Hostname, p.Subdomain, ns, clusterDomain)
	if err != nil {
		return nil // Kubernetes validates both as labels; nothing to grant otherwise
	}
	return names
}

// leafTemplate applies the signing policy to a parsed, signature-checked CSR:
// it decides the SANs and the validity of the leaf. pod is what the cluster
// says about the caller's pod (zero for a token not bound to a pod). It is
// pure: all inputs are arguments or configuration.
func (a *Authority) leafTemplate(id identity.ID, csr *x509.CertificateRequest, pod PodFacts, ttl time.Duration, issuerNotAfter time.Time) (*x509.Certificate, error) {
	if len(csr.IPAddresses) > 0 {
		return nil, fmt.Errorf("%w: IP address SANs are not allowed", ErrForbidden)
	}
	if len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: email SANs are not allowed", ErrForbidden)
	}
	want := id.String()
	switch len(csr.URIs) {
	case 0: // filled in below
	case 1:
		if got := csr.URIs[0].String(); got != want {
			return nil, fmt.Errorf("%w: URI SAN %q is not the caller's SPIFFE ID %q", ErrForbidden, got, want)
		}
	default:
		return nil, fmt.Errorf("%w: %d URI SANs; only the caller's SPIFFE ID %q is allowed", ErrForbidden, len(csr.URIs), want)
	}

	ns := id.Namespace
	own := podDNSNames(pod, ns, a.cfg.ClusterDomain)
	var dns []string
	add := func(name string) {
		if !slices.Contains(dns, name) {
			dns = append(dns, name)
		}
	}
	for _, n := range csr.DNSNames {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if strings.Contains(n, "*") {
			return nil, fmt.Errorf("%w: wildcard DNS SAN %q is never granted", ErrForbidden, n)
		}
		if err := identity.ValidateDNSName(n); err != nil {
			return nil, fmt.Errorf("%w: DNS SAN %q: %w", ErrBadRequest, n, err)
		}
		if !identity.NamespaceMayHoldDNSName(ns, a.cfg.ClusterDomain, n) && !slices.Contains(own, n) {
			return nil, fmt.Errorf("%w: DNS SAN %q is neither a Service name of namespace %q (<service>.%s.svc[.%s]) nor the calling pod's own name %q",
				ErrForbidden, n, ns, ns, a.cfg.ClusterDomain, own)
		}
		add(n)
	}
	for _, svc := range pod.Services {
		for _, n := range identity.ServiceDNSNames(svc, ns, a.cfg.ClusterDomain) {
			add(n)
		}
	}
	for _, n := range own {
		add(n)
	}
	if len(dns) > MaxDNSNames {
		return nil, fmt.Errorf("%w: %d DNS names, at most %d", ErrBadRequest, len(dns), MaxDNSNames)
	}

	now := a.cfg.Now()
	c := &x509util.Certificate{
		DNSNames:    dns,
		URIs:        x509util.MultiURL{id.URL()},
		NotBefore:   now.Add(-a.cfg.Backdate),
		NotAfter:    capTime(now.Add(a.clampTTL(ttl)), issuerNotAfter),
		KeyUsage:    x509util.KeyUsage(x509.KeyUsageDigitalSignature),
		ExtKeyUsage: x509util.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		PublicKey:   csr.PublicKey,
	}
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		// TLS 1.2 RSA key exchange encrypts to the key.
		c.KeyUsage |= x509util.KeyUsage(x509.KeyUsageKeyEncipherment)
	}
	if len(dns) > 0 {
		c.Subject.CommonName = dns[0]
	}
	tmpl := c.GetCertificate()

	// Second, independent check of the final names with smallstep's policy
	// engine: only the namespace's Service names, the pod's own names and the
	// trust domain's URIs.
	engine, err := a.namesPolicy(ns, own)
	if err != nil {
		return nil, err
	}
	if err := engine.IsX509CertificateAllowed(tmpl); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return tmpl, nil
}

// namesPolicy is the name policy of a namespace: one label in front of
// <ns>.svc[.<cluster-domain>] (a "*." domain matches exactly one label), and
// the pod's own names exactly. Building it is cheap (a few string
// operations), so it is not cached.
func (a *Authority) namesPolicy(ns string, podNames []string) (*policy.NamePolicyEngine, error) {
	e, err := policy.New(
		policy.WithPermittedDNSDomains(append([]string{"*." + ns + ".svc", "*." + ns + ".svc." + a.cfg.ClusterDomain}, podNames...)...),
		policy.WithPermittedURIDomains(a.cfg.TrustDomain),
		policy.WithSubjectCommonNameVerification(),
	)
	if err != nil {
		return nil, fmt.Errorf("name policy of namespace %q: %w", ns, err)
	}
	return e, nil
}
