package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/podtls/podtls/identity"
)

// MinPodCertLifetime is the shortest leaf Kubernetes accepts in answer to a
// PodCertificateRequest.
const MinPodCertLifetime = time.Hour

// ErrLifetime: the CA cannot issue a leaf as long as the request needs (its
// intermediate expires too soon).
var ErrLifetime = errors.New("lifetime")

// PodRequest is a PodCertificateRequest as the CA sees it, after the signer
// checked it against the pod (its UID, service account and node).
type PodRequest struct {
	// Caller is the pod: namespace, service account, name and UID.
	Caller Caller
	// StubCSR is the kubelet's PKCS#10 request (DER): it carries the key.
	StubCSR []byte
	// DNSNames are further names the pod asks for (its podtls.io/dns-names),
	// under the same rules as a CSR's.
	DNSNames []string
	// MaxLifetime is spec.maxExpirationSeconds: the leaf's whole validity,
	// backdating included, never exceeds it.
	MaxLifetime time.Duration
}

// SignPodCertificate issues the leaf of a PodCertificateRequest under the
// policy of Sign (the caller's SPIFFE ID, the names of the Services that
// select the pod and its own StatefulSet names, the namespace's name rules).
// The lifetime is MaxLifetime clamped to the policy bounds but never above
// MaxLifetime, and never under MinPodCertLifetime (ErrLifetime: the
// intermediate expires too soon). Errors wrap ErrBadRequest (ErrKeyType for
// a key that is not accepted), ErrForbidden or ErrLifetime.
func (a *Authority) SignPodCertificate(ctx context.Context, req PodRequest) (*Issued, error) {
	id, err := identity.New(a.cfg.TrustDomain, req.Caller.Namespace, req.Caller.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("%w: pod identity: %w", ErrForbidden, err)
	}
	csr, err := parseCSRDER(req.StubCSR)
	if err != nil {
		return nil, err
	}
	pod, err := a.podFacts(ctx, req.Caller)
	if err != nil {
		return nil, err
	}
	asked := *csr
	asked.DNSNames = append(slices.Clone(csr.DNSNames), req.DNSNames...)
	s := a.state.Load()
	tmpl, err := a.leafTemplate(id, &asked, pod, req.MaxLifetime, s.m.Intermediate.NotAfter)
	if err != nil {
		return nil, err
	}
	life := a.clampTTL(req.MaxLifetime)
	if req.MaxLifetime > 0 {
		life = min(life, req.MaxLifetime)
	}
	tmpl.NotAfter = capTime(tmpl.NotBefore.Add(life), s.m.Intermediate.NotAfter)
	if got := tmpl.NotAfter.Sub(tmpl.NotBefore); got < MinPodCertLifetime {
		return nil, fmt.Errorf("%w: the signing intermediate expires at %s, leaving %s, less than the %s a pod certificate needs",
			ErrLifetime, s.m.Intermediate.NotAfter.UTC().Format(time.RFC3339), got.Round(time.Second), MinPodCertLifetime)
	}
	return a.sign(s, tmpl)
}
