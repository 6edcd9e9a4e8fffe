package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"
)

// Lifetimes of the CA certificates podtls generates itself.
const (
	RootLifetime         = 10 * 365 * 24 * time.Hour
	IntermediateLifetime = 365 * 24 * time.Hour
)

// Material is the signing material of the CA: the intermediate that signs
// leaves, its key, the certificates between it and a root, and the roots.
type Material struct {
	// Intermediate signs leaf certificates.
	Intermediate *x509.Certificate
	// Key is the intermediate's private key.
	Key crypto.Signer
	// Chain holds the certificates between the intermediate and a root, if
	// any (a corporate CA may have several levels). Usually empty.
	Chain []*x509.Certificate
	// Roots are the roots the intermediate chains to. All are published.
	Roots []*x509.Certificate
	// ExtraRoots are published in the trust bundle beside Roots, for example
	// the next root during a rotation. The CA does not sign with them.
	ExtraRoots []*x509.Certificate
	// RootKey is set only when podtls generated the root itself; it lets the
	// CA renew its intermediate. A user-provided intermediate has none.
	RootKey crypto.Signer
}

// Generate creates a new self-signed root and an intermediate signed by it,
// both ECDSA P-256, valid from now (backdated by backdate).
func Generate(now time.Time, backdate time.Duration) (*Material, error) {
	root, rootKey, err := generateRoot(now, backdate)
	if err != nil {
		return nil, err
	}
	m := &Material{Roots: []*x509.Certificate{root}, RootKey: rootKey}
	if err := m.RenewIntermediate(now, backdate); err != nil {
		return nil, err
	}
	return m, nil
}

// generateRoot creates a self-signed ECDSA P-256 root valid for
// RootLifetime.
func generateRoot(now time.Time, backdate time.Duration) (*x509.Certificate, crypto.Signer, error) {
	rootKey, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"podtls"}, CommonName: "podtls root CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	// Self-signed: the template is its own parent.
	root, err := x509util.CreateCertificate(tmpl, tmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create root certificate: %w", err)
	}
	return root, rootKey, nil
}

// RenewIntermediate replaces the intermediate with a new one (new key) signed
// by the first root. It needs RootKey.
func (m *Material) RenewIntermediate(now time.Time, backdate time.Duration) error {
	if m.RootKey == nil || len(m.Roots) == 0 {
		return errors.New("renew intermediate: no root key (the intermediate was provided by the user)")
	}
	root := m.Roots[0]
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return fmt.Errorf("generate intermediate key: %w", err)
	}
	notAfter := now.Add(IntermediateLifetime)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	inter, err := x509util.CreateCertificate(&x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"podtls"}, CommonName: "podtls intermediate CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, root, key.Public(), m.RootKey)
	if err != nil {
		return fmt.Errorf("create intermediate certificate: %w", err)
	}
	m.Intermediate, m.Key, m.Chain = inter, key, nil
	return nil
}

// Validate checks that the material can sign at time now: the key matches the
// intermediate, the intermediate is a CA allowed to sign certificates, is
// within its validity and chains to one of the roots.
func (m *Material) Validate(now time.Time) error {
	if m == nil || m.Intermediate == nil || m.Key == nil {
		return errors.New("ca material: intermediate certificate or key missing")
	}
	if len(m.Roots) == 0 {
		return errors.New("ca material: no root certificate")
	}
	in := m.Intermediate
	if err := keyutil.VerifyPair(in.PublicKey, m.Key); err != nil {
		return fmt.Errorf("ca material: intermediate key does not match its certificate: %w", err)
	}
	if !in.BasicConstraintsValid || !in.IsCA {
		return fmt.Errorf("ca material: certificate %q is not a CA", in.Subject)
	}
	if in.KeyUsage != 0 && in.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca material: certificate %q may not sign certificates (key usage)", in.Subject)
	}
	if now.Before(in.NotBefore) || now.After(in.NotAfter) {
		return fmt.Errorf("ca material: intermediate %q is valid from %s to %s, not now (%s)",
			in.Subject, in.NotBefore.UTC().Format(time.RFC3339), in.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	roots := x509.NewCertPool()
	for _, r := range m.Roots {
		roots.AddCert(r)
	}
	inters := x509.NewCertPool()
	for _, c := range m.Chain {
		inters.AddCert(c)
	}
	if _, err := in.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inters,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("ca material: intermediate %q does not chain to the roots in %s: %w", in.Subject, KeyRoots, err)
	}
	return nil
}

// ChainPEM returns the intermediate and the certificates above it, PEM.
func (m *Material) ChainPEM() []byte {
	var b bytes.Buffer
	writeCertsPEM(&b, append([]*x509.Certificate{m.Intermediate}, m.Chain...))
	return b.Bytes()
}

// TrustBundlePEM returns every published root (Roots, then ExtraRoots that are
// not already among them), PEM.
func (m *Material) TrustBundlePEM() []byte {
	var b bytes.Buffer
	writeCertsPEM(&b, m.bundle())
	return b.Bytes()
}

func (m *Material) bundle() []*x509.Certificate {
	out := append([]*x509.Certificate(nil), m.Roots...)
	for _, e := range m.ExtraRoots {
		dup := false
		for _, r := range out {
			if bytes.Equal(r.Raw, e.Raw) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, e)
		}
	}
	return out
}

func writeCertsPEM(b *bytes.Buffer, certs []*x509.Certificate) {
	for _, c := range certs {
		// pem.Encode into a bytes.Buffer cannot fail.
		_ = pem.Encode(b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
}

// parseCerts parses a PEM bundle of certificates; empty input gives nil.
func parseCerts(what string, data []byte) ([]*x509.Certificate, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	certs, err := pemutil.ParseCertificateBundle(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", what, err)
	}
	return certs, nil
}

// parseSigner parses a PEM private key (PKCS#8, SEC 1 or PKCS#1).
func parseSigner(what string, data []byte) (crypto.Signer, error) {
	k, err := pemutil.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", what, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse %s: key of type %T cannot sign", what, k)
	}
	return s, nil
}

// marshalKeyPEM encodes a private key as PKCS#8 PEM.
func marshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func rootsPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	writeCertsPEM(&b, certs)
	return b.Bytes()
}
