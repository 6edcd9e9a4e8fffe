// Package testpki creates certificate authorities and leaves in tests with
// crypto/x509, and writes them the way kubelet and the agent do.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority; Chain holds the intermediates above it up to
// (not including) the root.
type CA struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

var serial atomic.Int64

func init() { serial.Store(time.Now().UnixNano() & 0xffffffff) }

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

// NewCA creates a self-signed root.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key}
}

// Intermediate issues a sub-CA.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("create intermediate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{cert}, ca.Chain...)}
}

// RootPEM is the CA certificate as PEM.
func (ca *CA) RootPEM() []byte { return CertPEM(ca.Cert) }

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// ChainPEM is the leaf followed by the issuer's intermediates.
	ChainPEM []byte
	// KeyPEM is PKCS#8.
	KeyPEM []byte
}

// LeafOptions describes a leaf. Zero times mean "valid from an hour ago for a day".
type LeafOptions struct {
	SPIFFEID  string
	DNSNames  []string
	NotBefore time.Time
	NotAfter  time.Time
	Key       crypto.Signer
}

// Issue signs a leaf usable as TLS server and client certificate.
func (ca *CA) Issue(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	l, err := ca.IssueE(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// IssueE is Issue without testing.TB, for use in servers inside tests.
func (ca *CA) IssueE(o LeafOptions) (*Leaf, error) {
	key := o.Key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		key = k
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		DNSNames:     o.DNSNames,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if o.SPIFFEID != "" {
		u, err := url.Parse(o.SPIFFEID)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("create leaf: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	chain := CertPEM(cert)
	for _, c := range ca.Chain {
		chain = append(chain, CertPEM(c)...)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key, ChainPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, nil
}

// CertPEM encodes one certificate.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func newKeyE() crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var swapSeq atomic.Int64

// KubeletWrite updates dir the way kubelet updates a Secret or ConfigMap
// volume: files go into a fresh "..<timestamp>" directory, a "..data_tmp"
// symlink to it is renamed over "..data", and each visible file is a symlink
// "name -> ..data/name". The previous timestamped directory is removed. It
// returns the moment of the swap (the rename).
func KubeletWrite(t testing.TB, dir string, files map[string][]byte) time.Time {
	t.Helper()
	swapped, err := KubeletWriteE(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	return swapped
}

// KubeletWriteE is KubeletWrite returning an error.
func KubeletWriteE(dir string, files map[string][]byte) (time.Time, error) {
	ts := fmt.Sprintf("..%s.%d", time.Now().UTC().Format("2006_01_02_15_04_05"), swapSeq.Add(1))
	tsDir := filepath.Join(dir, ts)
	if err := os.MkdirAll(tsDir, 0o755); err != nil {
		return time.Time{}, err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(tsDir, name), data, 0o600); err != nil {
			return time.Time{}, err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return time.Time{}, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return time.Time{}, err
	}
	swapped := time.Now()
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return time.Time{}, err
		}
	}
	if old != "" && old != ts {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return swapped, nil
}
