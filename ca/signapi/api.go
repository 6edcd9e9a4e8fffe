// Package signapi holds the wire types of the CA's HTTPS sign API, shared by the
// server (ca/server) and its client (sidecar/agent). Standard library only.
package signapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// SignPath is the path of the sign endpoint.
const SignPath = "/v1/sign"

// JoinPath is where a machine outside Kubernetes gets its first certificate:
// a SignRequest with "Authorization: Bearer <join token>" (a token of its
// service account bound to its join Secret), accepted once.
const JoinPath = "/v1/join"

// RenewPath is where such a machine renews: a SignRequest over mTLS with
// its current certificate, accepted while its registration exists.
const RenewPath = "/v1/renew"

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

// DecodeSignRequest reads one JSON SignRequest (of a body limited to
// MaxRequestBytes by the caller) and parses its TTL.
func DecodeSignRequest(r io.Reader) (SignRequest, time.Duration, error) {
	var req SignRequest
	dec := json.NewDecoder(r)
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, 0, fmt.Errorf("request body larger than %d bytes: %w", MaxRequestBytes, err)
		}
		return req, 0, fmt.Errorf("decode request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, 0, errors.New("decode request body: unexpected data after the JSON object")
	}
	if strings.TrimSpace(req.CSR) == "" {
		return req, 0, errors.New("request body: csr is empty")
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return req, 0, fmt.Errorf("request body: ttl: %w", err)
		}
		if d <= 0 {
			return req, 0, fmt.Errorf("request body: ttl %q must be positive", req.TTL)
		}
		ttl = d
	}
	return req, ttl, nil
}
