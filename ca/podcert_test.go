package ca

import (
	"encoding/pem"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestSignPodCertificate: the leaf of a PodCertificateRequest gets the pod's
// SPIFFE ID and names under Sign's policy, and a validity that never exceeds
// maxExpirationSeconds (backdating included) nor falls under the hour
// Kubernetes requires.
func TestSignPodCertificate(t *testing.T) {
	pods := servicesOf("demo/web-0", "web")
	caller := Caller{Namespace: "demo", ServiceAccount: "web", PodName: "web-0", PodUID: "uid-1"}
	stub := func(key string) []byte {
		b, _ := pem.Decode(makeCSR(t, csrSpec{key: key}))
		return b.Bytes
	}
	inter := testMaterial(t).Intermediate.NotAfter
	tests := []struct {
		name     string
		now      time.Time
		req      PodRequest
		wantErr  error
		wantLife time.Duration
		wantDNS  []string
	}{
		{name: "a day, as asked", req: PodRequest{StubCSR: stub(""), MaxLifetime: 24 * time.Hour},
			wantLife: 24 * time.Hour, wantDNS: []string{"web.demo.svc", "web.demo.svc.cluster.local"}},
		{name: "the API's minimum hour, exactly", req: PodRequest{StubCSR: stub("ed25519"), MaxLifetime: time.Hour}, wantLife: time.Hour},
		{name: "above the CA's maximum: clamped", req: PodRequest{StubCSR: stub("p384"), MaxLifetime: 30 * 24 * time.Hour}, wantLife: MaxTTL},
		{name: "unset: the CA's default", req: PodRequest{StubCSR: stub("")}, wantLife: DefaultTTL},
		{name: "extra names of the namespace", req: PodRequest{StubCSR: stub(""), MaxLifetime: time.Hour, DNSNames: []string{"api.demo.svc"}},
			wantLife: time.Hour, wantDNS: []string{"api.demo.svc", "web.demo.svc", "web.demo.svc.cluster.local"}},
		{name: "a name of another namespace", req: PodRequest{StubCSR: stub(""), MaxLifetime: time.Hour, DNSNames: []string{"api.prod.svc"}}, wantErr: ErrForbidden},
		{name: "P-224 key", req: PodRequest{StubCSR: stub("p224"), MaxLifetime: time.Hour}, wantErr: ErrKeyType},
		{name: "RSA 1024 key", req: PodRequest{StubCSR: stub("rsa1024"), MaxLifetime: time.Hour}, wantErr: ErrKeyType},
		{name: "not a CSR", req: PodRequest{StubCSR: []byte("junk"), MaxLifetime: time.Hour}, wantErr: ErrBadRequest},
		{name: "intermediate about to expire", now: inter.Add(-30 * time.Minute), req: PodRequest{StubCSR: stub(""), MaxLifetime: time.Hour}, wantErr: ErrLifetime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Pods: pods}
			if !tc.now.IsZero() {
				cfg.Now = func() time.Time { return tc.now }
			}
			a := newTestAuthority(t, cfg)
			tc.req.Caller = caller
			got, err := a.SignPodCertificate(t.Context(), tc.req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf := got.Certificate
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life != tc.wantLife {
				t.Errorf("lifetime %s, want %s", life, tc.wantLife)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != demoID {
				t.Errorf("URIs %v, want %s", leaf.URIs, demoID)
			}
			if tc.wantDNS != nil && !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNS names %q, want %q", leaf.DNSNames, tc.wantDNS)
			}
			verifyChain(t, a, got)
		})
	}
}
