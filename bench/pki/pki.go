// Package pki writes the throwaway certificates the data-plane benchmark needs:
// an ECDSA P-256 root and intermediate, mesh leaves with SPIFFE URI SANs for the
// sidecars and the load clients, and a DNS-named leaf for the public edge.
// Every file lives in one directory the caller removes when the run ends.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Names used in the benchmark certificates. The edge name is in the .test TLD,
// which never resolves, so nothing can leave the machine by accident.
const (
	TrustDomain = "cluster.local"
	ServerID    = "spiffe://cluster.local/ns/bench/sa/backend"
	ClientID    = "spiffe://cluster.local/ns/bench/sa/client"
	ServerName  = "backend.bench.svc"
	EdgeName    = "edge.bench.test"
)

// Leaf is a certificate directory in the kubernetes.io/tls layout the sidecar
// reads: tls.crt (leaf then intermediate) and tls.key (PKCS#8).
type Leaf struct {
	Dir  string
	Cert string
	Key  string
}

// Set is every file of one benchmark PKI.
type Set struct {
	Root   string // PEM root certificate: the trust bundle
	Server Leaf   // mesh identity of the inbound side (ServerID, ServerName, 127.0.0.1)
	Client Leaf   // mesh identity of the caller (ClientID)
	Edge   Leaf   // public edge certificate (EdgeName), served by SNI
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Write creates the PKI under dir, valid from now-1h for a day.
func Write(dir string, now time.Time) (*Set, error) {
	root, rootDER, err := newCA(nil, "podtls bench root", now)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	inter, interDER, err := newCA(root, "podtls bench intermediate", now)
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	set := &Set{Root: filepath.Join(dir, "root.crt")}
	if err := os.WriteFile(set.Root, pemBlock("CERTIFICATE", rootDER), 0o644); err != nil {
		return nil, fmt.Errorf("write root: %w", err)
	}
	leaves := []struct {
		into *Leaf
		name string
		tmpl x509.Certificate
	}{
		{&set.Server, "server", x509.Certificate{
			URIs:        mustURLs(ServerID),
			DNSNames:    []string{ServerName},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}},
		{&set.Client, "client", x509.Certificate{
			URIs:        mustURLs(ClientID),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}},
		{&set.Edge, "edge", x509.Certificate{
			Subject:     pkix.Name{CommonName: EdgeName},
			DNSNames:    []string{EdgeName},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}},
	}
	for _, l := range leaves {
		leaf, err := writeLeaf(filepath.Join(dir, l.name), inter, interDER, l.tmpl, now)
		if err != nil {
			return nil, fmt.Errorf("%s leaf: %w", l.name, err)
		}
		*l.into = leaf
	}
	return set, nil
}

func newCA(parent *issuer, cn string, now time.Time) (*issuer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &issuer{cert: cert, key: key}, der, nil
}

func writeLeaf(dir string, ca *issuer, caDER []byte, tmpl x509.Certificate, now time.Time) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return Leaf{}, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Leaf{}, fmt.Errorf("marshal key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Leaf{}, fmt.Errorf("mkdir %s: %w", dir, err)
	}
	l := Leaf{Dir: dir, Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	chain := append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", caDER)...)
	if err := os.WriteFile(l.Cert, chain, 0o644); err != nil {
		return Leaf{}, fmt.Errorf("write %s: %w", l.Cert, err)
	}
	if err := os.WriteFile(l.Key, pemBlock("PRIVATE KEY", keyDER), 0o600); err != nil {
		return Leaf{}, fmt.Errorf("write %s: %w", l.Key, err)
	}
	return l, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return s, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func mustURLs(raw string) []*url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		panic(fmt.Sprintf("bench pki: bad constant URI %q: %v", raw, err))
	}
	return []*url.URL{u}
}
