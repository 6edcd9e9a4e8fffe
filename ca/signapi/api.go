// Package signapi holds the wire types of the CA's HTTPS sign API, shared by the
// server (ca/server) and its client (sidecar/agent). Standard library only.
package signapi

// SignPath is the path of the sign endpoint.
const SignPath = "/v1/sign"

// Audience is the audience the projected service-account token must carry.
const Audience = "podtls-ca"

// MaxRequestBytes bounds the size of a sign request body.
const MaxRequestBytes = 64 << 10

// SignRequest is the JSON body of POST /v1/sign. The caller authenticates with
// "Authorization: Bearer <projected service-account token>".
type SignRequest struct {
	// CSR is a PEM "CERTIFICATE REQUEST". Its URI SAN, if any, must be the
	// caller's SPIFFE ID; its DNS SANs must belong to the caller's namespace.
	CSR string `json:"csr"`
	// TTL is a Go duration ("24h"); empty means the CA's default. The CA clamps
	// it to its policy bounds.
	TTL string `json:"ttl,omitempty"`
}

// SignResponse is the JSON answer to a successful sign request.
type SignResponse struct {
	// CertificateChain is PEM: the leaf first, then intermediates (not the root).
	CertificateChain string `json:"certificate_chain"`
	// TrustBundle is PEM with one or more roots.
	TrustBundle string `json:"trust_bundle"`
	// NotAfter is the leaf's expiry, RFC 3339.
	NotAfter string `json:"not_after"`
}

// Error is the JSON body of every error response.
type Error struct {
	Message string `json:"message"`
}
