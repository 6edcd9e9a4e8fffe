package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"sync"
	"testing"
)

// csrSpec describes a test CSR.
type csrSpec struct {
	key    string // p256 (default), p384, p224, ed25519, rsa2048, rsa1024
	dns    []string
	uris   []string
	ips    []string
	emails []string
}

var (
	keyMu    sync.Mutex
	keyCache = map[string]crypto.Signer{}
)

// testKey returns a key of the named type, cached: RSA generation is slow.
func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	if kind == "" {
		kind = "p256"
	}
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[kind]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	keyCache[kind] = k
	return k
}

// makeCSR returns a PEM CSR for spec.
func makeCSR(t testing.TB, spec csrSpec) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: spec.dns, EmailAddresses: spec.emails}
	for _, u := range spec.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("parse uri %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	for _, ip := range spec.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	return csrPEM(t, tmpl, testKey(t, spec.key))
}

func csrPEM(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create csr: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
