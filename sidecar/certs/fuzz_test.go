package certs

import (
	"crypto/tls"
	"testing"

	"github.com/podtls/podtls/internal/testpki"
)

type tlsCert = tls.Certificate

func FuzzParseCertificates(f *testing.F) {
	ca := testpki.NewCA(f, "fuzz")
	f.Add(ca.RootPEM())
	f.Add([]byte("# comment\n" + string(ca.RootPEM()) + "trailing"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
	})
}

func FuzzParseKeyPair(f *testing.F) {
	ca := testpki.NewCA(f, "fuzz")
	l := ca.Issue(f, testpki.LeafOptions{SPIFFEID: meshID})
	f.Add(l.ChainPEM, l.KeyPEM)
	f.Add(l.ChainPEM, []byte("garbage"))
	f.Add(l.KeyPEM, l.ChainPEM)
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		p, err := ParseKeyPair(certPEM, keyPEM)
		if err == nil && (p == nil || p.Leaf == nil || p.PrivateKey == nil) {
			t.Fatal("incomplete key pair without error")
		}
	})
}

func FuzzSplitCredentialBundle(f *testing.F) {
	ca := testpki.NewCA(f, "fuzz")
	l := ca.Issue(f, testpki.LeafOptions{SPIFFEID: meshID})
	f.Add(append(append([]byte{}, l.KeyPEM...), l.ChainPEM...))
	f.Add(l.ChainPEM)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certPEM, keyPEM, err := SplitCredentialBundle(data)
		if err == nil && (len(certPEM) == 0 || len(keyPEM) == 0) {
			t.Fatal("no error, but no chain or no key")
		}
	})
}
