package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ParseCertificates reads every CERTIFICATE block of a PEM file. Text between
// blocks is ignored (bundles often carry comments); any other block type, an
// unparsable certificate or a file without certificates is an error.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q, want CERTIFICATE", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	if len(bytes.TrimSpace(rest)) > 0 && bytes.Contains(rest, []byte("-----BEGIN")) {
		// A truncated block after good ones: a half-written file.
		return nil, errors.New("truncated PEM block at end of file")
	}
	return out, nil
}

// ParseKeyPair parses a certificate chain and its key (PKCS#8, SEC1 or PKCS#1)
// and checks that they belong together. The chain must be leaf first.
func ParseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	chain, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.crt: %w", err)
	}
	// X509KeyPair accepts the three key encodings and rejects a key that does
	// not match the leaf. Its errors never include key material.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key pair: %w", err)
	}
	pair.Leaf = chain[0]
	return &pair, nil
}

// checkValidity reports whether now is inside the leaf's validity window.
func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate serial %s is not valid before %s", c.SerialNumber.Text(16), c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate serial %s expired at %s", c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// chainOf parses the DER chain of a tls.Certificate (leaf first).
func chainOf(c *tls.Certificate) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(c.Certificate))
	for i, der := range c.Certificate {
		if i == 0 && c.Leaf != nil {
			out = append(out, c.Leaf)
			continue
		}
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

// ValidateMesh checks a mesh certificate: inside validity and chaining to roots.
func ValidateMesh(c *tls.Certificate, roots *x509.CertPool, now time.Time) error {
	chain, err := chainOf(c)
	if err != nil {
		return err
	}
	if err := checkValidity(chain[0], now); err != nil {
		return err
	}
	if roots == nil {
		return errors.New("no trust bundle loaded (--trust-bundle or ca.crt in the cert dir)")
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: poolOf(chain[1:]), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("does not chain to the trust bundle: %w", err)
	}
	return nil
}

// ValidateExternal checks an external (ACME) certificate: inside validity, at
// least one DNS name, and a complete chain. Complete means the leaf verifies
// with the intermediates in the file up to the file's last certificate taken
// as anchor (an ACME chain is leaf + intermediates; private ACME CAs such as
// step-ca or Pebble are not in any system store), or, failing that, against
// the system roots. A lone leaf therefore passes only if a system root issued
// it directly: otherwise clients could not build its chain. systemRoots is
// called only when needed: parsing the system store costs a few MB of memory.
func ValidateExternal(c *tls.Certificate, systemRoots func() *x509.CertPool, now time.Time) error {
	chain, err := chainOf(c)
	if err != nil {
		return err
	}
	leaf := chain[0]
	if err := checkValidity(leaf, now); err != nil {
		return err
	}
	if len(leaf.DNSNames) == 0 {
		return errors.New("external certificate has no DNS names to select it by SNI")
	}
	opts := x509.VerifyOptions{CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	var anchorErr error
	if len(chain) >= 2 {
		opts.Roots = poolOf(chain[len(chain)-1:])
		opts.Intermediates = poolOf(chain[1 : len(chain)-1])
		if _, anchorErr = leaf.Verify(opts); anchorErr == nil {
			return nil
		}
	}
	if systemRoots != nil {
		if roots := systemRoots(); roots != nil {
			opts.Roots = roots
			opts.Intermediates = poolOf(chain[1:])
			if _, err := leaf.Verify(opts); err == nil {
				return nil
			}
		}
	}
	if anchorErr != nil {
		return fmt.Errorf("incomplete or broken chain in tls.crt: %w", anchorErr)
	}
	return errors.New("incomplete chain: tls.crt holds only the leaf and no system root issued it; include the intermediates")
}

func poolOf(cs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

// SplitCredentialBundle splits a credential bundle (the kubelet's
// podCertificate format: a PKCS#8 PRIVATE KEY block, then the chain, leaf
// first; SEC 1 and PKCS#1 keys are accepted too) into the chain's PEM and
// the key's PEM. Exactly one key block, at least one CERTIFICATE block and
// no other block type: anything else is an error that never quotes the key.
func SplitCredentialBundle(data []byte) (certPEM, keyPEM []byte, err error) {
	var certs, key bytes.Buffer
	keys := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, nil, errors.New("credential bundle: truncated PEM block")
			}
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			_ = pem.Encode(&certs, &pem.Block{Type: b.Type, Bytes: b.Bytes})
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			keys++
			_ = pem.Encode(&key, &pem.Block{Type: b.Type, Bytes: b.Bytes})
		default:
			return nil, nil, fmt.Errorf("credential bundle: unexpected PEM block %q, want a private key and CERTIFICATE blocks", b.Type)
		}
	}
	switch {
	case keys != 1:
		return nil, nil, fmt.Errorf("credential bundle: %d private key blocks, want 1", keys)
	case certs.Len() == 0:
		return nil, nil, errors.New("credential bundle: no CERTIFICATE block")
	}
	return certs.Bytes(), key.Bytes(), nil
}
