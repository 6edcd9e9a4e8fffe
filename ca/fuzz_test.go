package ca

import (
	"encoding/pem"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/podtls/podtls/identity"
)

// FuzzSign feeds arbitrary bytes (PEM or raw DER wrapped in PEM) to Sign, for
// a StatefulSet pod, and checks that whatever it signs obeys the policy.
func FuzzSign(f *testing.F) {
	valid := makeCSR(f, csrSpec{dns: []string{"web.demo.svc", "web.demo.svc.cluster.local"}, uris: []string{demoID}})
	f.Add(valid, false)
	f.Add(makeCSR(f, csrSpec{dns: []string{"db.prod.svc"}}), false)
	f.Add(makeCSR(f, csrSpec{key: "ed25519", ips: []string{"10.1.2.3"}}), false)
	f.Add(otherNameCSR(f), false)
	f.Add(badSignatureCSR(f), false)
	b, _ := pem.Decode(valid)
	f.Add(b.Bytes, true)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"), false)
	f.Add([]byte{}, false)
	f.Add(makeCSR(f, csrSpec{dns: []string{"web-0.web.demo.svc", "WEB-0.web.demo.svc.cluster.local."}}), false)
	f.Add(makeCSR(f, csrSpec{dns: []string{"web-1.web.demo.svc"}}), false)
	f.Add(makeCSR(f, csrSpec{dns: []string{"web-0.web.prod.svc"}}), false)

	// web-0 of a StatefulSet behind the headless Service web.
	a := newTestAuthority(f, Config{Pods: &fakePods{byPod: map[string]PodFacts{"demo/web-0": web0}}})
	own := []string{"web-0.web.demo.svc", "web-0.web.demo.svc.cluster.local"}
	caller := Caller{Namespace: "demo", ServiceAccount: "web", PodName: "web-0"}
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		if wrap {
			data = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: data})
		}
		got, err := a.Sign(t.Context(), caller, data, time.Duration(len(data))*time.Minute)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrForbidden) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		leaf := got.Certificate
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != demoID {
			t.Fatalf("URIs = %v", leaf.URIs)
		}
		if len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("IP/email SANs issued: %v %v", leaf.IPAddresses, leaf.EmailAddresses)
		}
		for _, n := range leaf.DNSNames {
			if !identity.NamespaceMayHoldDNSName("demo", identity.DefaultClusterDomain, n) && !slices.Contains(own, n) {
				t.Fatalf("issued DNS name %q: neither a Service name of namespace demo nor the pod's own", n)
			}
		}
		if d := leaf.NotAfter.Sub(leaf.NotBefore); d < MinTTL || d > MaxTTL+Backdate {
			t.Fatalf("lifetime %s out of bounds", d)
		}
	})
}
