// Package acme obtains publicly trusted certificates for the external host
// names of pods from any RFC 8555 server (Let's Encrypt by default) with the
// DNS-01 challenge, using lego. This file holds the types shared by the
// issuer (lego, account, DNS providers) and acme/reconciler, which decides
// when to order and stores the results in Secrets.
package acme

import (
	"crypto/x509"
	"time"
)

// Certificate is one issued certificate with the key generated for it.
type Certificate struct {
	// ChainPEM is the leaf followed by the intermediates, as served (tls.crt).
	ChainPEM []byte
	// KeyPEM is the certificate's private key, PKCS#8 PEM (tls.key).
	KeyPEM []byte
	// Leaf is the parsed first certificate of ChainPEM.
	Leaf *x509.Certificate
}

// Renewal says when a certificate should be renewed and why.
type Renewal struct {
	// At is the planned renewal time (a random point inside the server's
	// window for ARI).
	At time.Time
	// Source is status.RenewalARI or status.RenewalLifetime.
	Source string
	// RecheckAfter is when to ask the server again (ARI's Retry-After);
	// zero for lifetime-based renewals.
	RecheckAfter time.Duration
}
