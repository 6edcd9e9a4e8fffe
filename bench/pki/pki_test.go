package pki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"
)

func TestWriteChainsAndNames(t *testing.T) {
	now := time.Now()
	set, err := Write(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(set.Root)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root file holds no certificate")
	}
	tests := []struct {
		name    string
		leaf    Leaf
		dnsName string
		uri     string
		usage   x509.ExtKeyUsage
	}{
		{"server", set.Server, ServerName, ServerID, x509.ExtKeyUsageServerAuth},
		{"server by IP", set.Server, "127.0.0.1", ServerID, x509.ExtKeyUsageServerAuth},
		{"client", set.Client, "", ClientID, x509.ExtKeyUsageClientAuth},
		{"edge", set.Edge, EdgeName, "", x509.ExtKeyUsageServerAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pair, err := tls.LoadX509KeyPair(tt.leaf.Cert, tt.leaf.Key)
			if err != nil {
				t.Fatalf("key pair: %v", err)
			}
			if len(pair.Certificate) != 2 {
				t.Fatalf("tls.crt holds %d certificates, want leaf + intermediate", len(pair.Certificate))
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			inter, err := x509.ParseCertificate(pair.Certificate[1])
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AddCert(inter)
			if _, err := leaf.Verify(x509.VerifyOptions{
				DNSName: tt.dnsName, Roots: roots, Intermediates: pool,
				CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{tt.usage},
			}); err != nil {
				t.Fatalf("verify: %v", err)
			}
			var uri string
			if len(leaf.URIs) == 1 {
				uri = leaf.URIs[0].String()
			}
			if uri != tt.uri {
				t.Fatalf("URI SAN = %q, want %q", uri, tt.uri)
			}
			st, err := os.Stat(tt.leaf.Key)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("key mode = %v, want 0600", st.Mode().Perm())
			}
		})
	}
	// The edge certificate must not be accepted for the mesh name, or the
	// sidecar's SNI routing would not be what the bench exercises.
	pair, _ := tls.LoadX509KeyPair(set.Edge.Cert, set.Edge.Key)
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if err := leaf.VerifyHostname(ServerName); err == nil {
		t.Fatal("edge certificate verifies for the mesh server name")
	}
}
