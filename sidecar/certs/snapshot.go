package certs

import (
	"crypto/x509"
	"encoding/hex"
	"time"
)

// CertInfo is the public description of a certificate (never key material).
type CertInfo struct {
	Name      string    `json:"name"`
	Dir       string    `json:"dir,omitempty"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	URIs      []string  `json:"uris,omitempty"`
	IPs       []string  `json:"ip_addresses,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// AuthorityKeyID is the issuer's key identifier (hex): which
	// intermediate signed the certificate, so a CA rotation can count the
	// workloads still on the old chain.
	AuthorityKeyID string `json:"authority_key_id,omitempty"`
}

// Snapshot is what the store serves right now.
type Snapshot struct {
	Ready    bool       `json:"ready"`
	Mesh     *CertInfo  `json:"mesh,omitempty"`
	External []CertInfo `json:"external,omitempty"`
	Trust    []CertInfo `json:"trust_roots,omitempty"`
}

// Info describes one certificate.
func Info(name, dir string, c *x509.Certificate) CertInfo {
	ci := CertInfo{
		Name: name, Dir: dir,
		Subject: c.Subject.String(), Issuer: c.Issuer.String(),
		Serial:   c.SerialNumber.Text(16),
		DNSNames: c.DNSNames, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		AuthorityKeyID: hex.EncodeToString(c.AuthorityKeyId),
	}
	for _, u := range c.URIs {
		ci.URIs = append(ci.URIs, u.String())
	}
	for _, ip := range c.IPAddresses {
		ci.IPs = append(ci.IPs, ip.String())
	}
	return ci
}

// Snapshot returns the certificates currently served.
func (s *Store) Snapshot() Snapshot {
	snap := Snapshot{Ready: s.Ready()}
	if m := s.mesh.Load(); m != nil {
		i := Info(m.name, m.dir, m.cert.Leaf)
		snap.Mesh = &i
	}
	for _, e := range s.externals.Load().entries {
		snap.External = append(snap.External, Info(e.name, e.dir, e.cert.Leaf))
	}
	for _, c := range s.TrustCertificates() {
		snap.Trust = append(snap.Trust, Info("trust", "", c))
	}
	return snap
}
