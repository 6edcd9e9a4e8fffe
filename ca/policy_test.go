package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

// fakePods maps "ns/pod" to what the cluster says about the pod.
type fakePods struct {
	byPod map[string]PodFacts
	err   error
}

func (f *fakePods) LookupPod(_ context.Context, ns, pod, _ string) (PodFacts, error) {
	if f.err != nil {
		return PodFacts{}, f.err
	}
	return f.byPod[ns+"/"+pod], nil
}

// servicesOf is a fakePods knowing only the Services selecting one pod.
func servicesOf(nsPod string, services ...string) *fakePods {
	return &fakePods{byPod: map[string]PodFacts{nsPod: {Services: services}}}
}

var (
	materialOnce *Material
)

func testMaterial(t testing.TB) *Material {
	t.Helper()
	if materialOnce == nil {
		m, err := Generate(testNow.Add(-time.Hour), Backdate)
		if err != nil {
			t.Fatalf("generate: %v", err)
		}
		materialOnce = m
	}
	return materialOnce
}

func newTestAuthority(t testing.TB, cfg Config) *Authority {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	a, err := New(testMaterial(t), cfg)
	if err != nil {
		t.Fatalf("new authority: %v", err)
	}
	return a
}

const demoID = "spiffe://cluster.local/ns/demo/sa/web"

func TestSignPolicy(t *testing.T) {
	caller := Caller{Namespace: "demo", ServiceAccount: "web", PodName: "web-0", PodUID: "uid-1"}
	services := servicesOf("demo/web-0", "preference", "web")

	tests := []struct {
		name     string
		caller   *Caller // default caller if nil
		csr      csrSpec
		rawCSR   []byte // used instead of csr if set
		ttl      time.Duration
		services PodLookup
		cluster  string
		wantErr  error
		wantDNS  []string // nil: don't check
		wantTTL  time.Duration
	}{
		{name: "empty CSR gets SPIFFE ID filled in", csr: csrSpec{}, wantDNS: []string{}, wantTTL: DefaultTTL},
		{name: "own SPIFFE ID accepted", csr: csrSpec{uris: []string{demoID}}, wantTTL: DefaultTTL},
		{name: "other SPIFFE ID denied", csr: csrSpec{uris: []string{"spiffe://cluster.local/ns/demo/sa/admin"}}, wantErr: ErrForbidden},
		{name: "SPIFFE ID of other namespace denied", csr: csrSpec{uris: []string{"spiffe://cluster.local/ns/kube-system/sa/web"}}, wantErr: ErrForbidden},
		{name: "other trust domain denied", csr: csrSpec{uris: []string{"spiffe://evil.example/ns/demo/sa/web"}}, wantErr: ErrForbidden},
		{name: "two URIs denied", csr: csrSpec{uris: []string{demoID, "https://demo.example"}}, wantErr: ErrForbidden},
		{name: "namespace DNS names accepted, lower-cased, deduplicated",
			csr:     csrSpec{dns: []string{"web.demo.svc", "WEB.demo.svc.cluster.local.", "web.demo.svc"}},
			wantDNS: []string{"web.demo.svc", "web.demo.svc.cluster.local"}},
		{name: "DNS name of another namespace denied", csr: csrSpec{dns: []string{"web.demo.svc", "db.prod.svc"}}, wantErr: ErrForbidden},
		{name: "two labels in front denied", csr: csrSpec{dns: []string{"a.web.demo.svc"}}, wantErr: ErrForbidden},
		{name: "bare namespace suffix denied", csr: csrSpec{dns: []string{"demo.svc"}}, wantErr: ErrForbidden},
		{name: "public name denied", csr: csrSpec{dns: []string{"shop.example.com"}}, wantErr: ErrForbidden},
		{name: "wildcard denied", csr: csrSpec{dns: []string{"*.demo.svc"}}, wantErr: ErrForbidden},
		{name: "invalid DNS name is a bad request", csr: csrSpec{dns: []string{"we_b.demo.svc"}}, wantErr: ErrBadRequest},
		{name: "other cluster domain denied", csr: csrSpec{dns: []string{"web.demo.svc.example.internal"}}, wantErr: ErrForbidden},
		{name: "configured cluster domain accepted", cluster: "example.internal",
			csr: csrSpec{dns: []string{"web.demo.svc.example.internal"}}, wantDNS: []string{"web.demo.svc.example.internal"}},
		{name: "IP SAN denied", csr: csrSpec{ips: []string{"10.0.0.1"}}, wantErr: ErrForbidden},
		{name: "email SAN denied", csr: csrSpec{emails: []string{"a@demo.svc"}}, wantErr: ErrForbidden},
		{name: "otherName SAN denied", rawCSR: otherNameCSR(t), wantErr: ErrForbidden},
		{name: "P-384 accepted", csr: csrSpec{key: "p384"}},
		{name: "Ed25519 accepted", csr: csrSpec{key: "ed25519"}},
		{name: "RSA 2048 accepted", csr: csrSpec{key: "rsa2048"}},
		{name: "RSA 1024 rejected", csr: csrSpec{key: "rsa1024"}, wantErr: ErrBadRequest},
		{name: "P-224 rejected", csr: csrSpec{key: "p224"}, wantErr: ErrBadRequest},
		{name: "not PEM", rawCSR: []byte("hello"), wantErr: ErrBadRequest},
		{name: "wrong PEM type", rawCSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), wantErr: ErrBadRequest},
		{name: "garbage DER", rawCSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), wantErr: ErrBadRequest},
		{name: "trailing data after PEM", rawCSR: append(makeCSR(t, csrSpec{}), []byte("junk")...), wantErr: ErrBadRequest},
		{name: "bad signature", rawCSR: badSignatureCSR(t), wantErr: ErrBadRequest},
		{name: "TTL below minimum clamped up", ttl: time.Minute, wantTTL: MinTTL},
		{name: "TTL above maximum clamped down", ttl: 30 * 24 * time.Hour, wantTTL: MaxTTL},
		{name: "TTL within bounds kept", ttl: 48 * time.Hour, wantTTL: 48 * time.Hour},
		{name: "Service names added for the pod", services: services,
			csr:     csrSpec{dns: []string{"extra.demo.svc"}},
			wantDNS: []string{"extra.demo.svc", "preference.demo.svc", "preference.demo.svc.cluster.local", "web.demo.svc", "web.demo.svc.cluster.local"}},
		{name: "no Service names without a bound pod", services: services, caller: &Caller{Namespace: "demo", ServiceAccount: "web"}, wantDNS: []string{}},
		{name: "service cache not ready", services: &fakePods{err: fmt.Errorf("%w: syncing", ErrNotReady)}, wantErr: ErrNotReady},
		{name: "invalid caller namespace", caller: &Caller{Namespace: "Demo", ServiceAccount: "web"}, wantErr: ErrForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAuthority(t, Config{Pods: tc.services, ClusterDomain: tc.cluster})
			c := caller
			if tc.caller != nil {
				c = *tc.caller
			}
			csr := tc.rawCSR
			if csr == nil {
				csr = makeCSR(t, tc.csr)
			}
			got, err := a.Sign(t.Context(), c, csr, tc.ttl)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Sign error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			leaf := got.Certificate
			wantID := "spiffe://cluster.local/ns/" + c.Namespace + "/sa/" + c.ServiceAccount
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
				t.Errorf("URIs = %v, want [%s]", leaf.URIs, wantID)
			}
			if tc.wantDNS != nil && !slices.Equal(append([]string{}, leaf.DNSNames...), tc.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", leaf.DNSNames, tc.wantDNS)
			}
			if len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("unexpected IP/email SANs: %v %v", leaf.IPAddresses, leaf.EmailAddresses)
			}
			if want := testNow.Add(-Backdate); !leaf.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %s, want %s (backdated)", leaf.NotBefore, want)
			}
			if tc.wantTTL != 0 {
				if got := leaf.NotAfter.Sub(testNow); got != tc.wantTTL {
					t.Errorf("lifetime = %s, want %s", got, tc.wantTTL)
				}
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
			}
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			if bits := leaf.SerialNumber.BitLen(); bits < 64 || bits > 128 {
				t.Errorf("serial has %d bits, want a random 128-bit number", bits)
			}
			verifyChain(t, a, got)
		})
	}
}

// verifyChain checks the issued chain against the Authority's trust bundle
// (parsed from PEM, as a client would).
func verifyChain(t *testing.T, a *Authority, got *Issued) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(got.TrustBundlePEM) {
		t.Fatal("trust bundle has no certificates")
	}
	var chain []*x509.Certificate
	rest := got.ChainPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("parse chain: %v", err)
		}
		chain = append(chain, c)
	}
	if len(chain) != 2 || !bytes.Equal(chain[0].Raw, got.Certificate.Raw) {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(chain))
	}
	inter := x509.NewCertPool()
	inter.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: testNow,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("leaf does not verify against the trust bundle: %v", err)
	}
}

func badSignatureCSR(t testing.TB) []byte {
	b, _ := pem.Decode(makeCSR(t, csrSpec{}))
	der := bytes.Clone(b.Bytes)
	der[len(der)-5] ^= 0xff // inside the signature
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// otherNameCSR carries a subjectAltName with an otherName, which the Go
// parser skips silently.
func otherNameCSR(t testing.TB) []byte {
	value, err := asn1.Marshal(struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue `asn1:"explicit,tag:0"`
	}{ID: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("admin@corp")}})
	if err != nil {
		t.Fatal(err)
	}
	// Re-tag the SEQUENCE as [0] (otherName).
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(value, &seq); err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: seq.Bytes}})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Value: san}}}
	return csrPEM(t, tmpl, testKey(t, "p256"))
}

func TestSignNeverOutlivesIntermediate(t *testing.T) {
	m := testMaterial(t)
	now := m.Intermediate.NotAfter.Add(-2 * time.Hour)
	a, err := New(m, Config{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Sign(t.Context(), Caller{Namespace: "demo", ServiceAccount: "web"}, makeCSR(t, csrSpec{}), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificate.NotAfter.Equal(m.Intermediate.NotAfter) {
		t.Errorf("NotAfter = %s, want the intermediate's %s", got.Certificate.NotAfter, m.Intermediate.NotAfter)
	}
}

func TestSignSerialsDiffer(t *testing.T) {
	a := newTestAuthority(t, Config{})
	seen := map[string]bool{}
	for range 20 {
		got, err := a.Sign(t.Context(), Caller{Namespace: "demo", ServiceAccount: "web"}, makeCSR(t, csrSpec{}), 0)
		if err != nil {
			t.Fatal(err)
		}
		s := got.Certificate.SerialNumber.String()
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
}

func TestIssueServing(t *testing.T) {
	a := newTestAuthority(t, Config{})
	c, err := a.IssueServing([]string{"podtls-controller.podtls-system.svc"}, []net.IP{net.ParseIP("127.0.0.1")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || c.Leaf == nil || c.PrivateKey == nil {
		t.Fatalf("certificate: %d DER blocks, leaf %v", len(c.Certificate), c.Leaf != nil)
	}
	inter, err := x509.ParseCertificate(c.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(inter)
	for _, name := range []string{"podtls-controller.podtls-system.svc", "127.0.0.1"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: a.TrustPool(), Intermediates: pool, CurrentTime: testNow}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := a.IssueServing(nil, nil, 0); err == nil {
		t.Error("IssueServing without names succeeded")
	}
	if _, err := a.IssueServing([]string{"bad name"}, nil, 0); err == nil || !strings.Contains(err.Error(), "bad name") {
		t.Errorf("IssueServing with an invalid name: err = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	m := testMaterial(t)
	for _, cfg := range []Config{
		{TrustDomain: "Bad Domain"},
		{ClusterDomain: "-x"},
		{MinTTL: 2 * time.Hour, MaxTTL: time.Hour},
		{DefaultTTL: 30 * 24 * time.Hour},
	} {
		if _, err := New(m, cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestClampTTL(t *testing.T) {
	a := newTestAuthority(t, Config{})
	for _, tc := range []struct{ in, want time.Duration }{
		{0, DefaultTTL}, {-time.Hour, DefaultTTL}, {time.Second, MinTTL}, {MinTTL, MinTTL},
		{5 * time.Hour, 5 * time.Hour}, {MaxTTL, MaxTTL}, {MaxTTL + 1, MaxTTL},
	} {
		if got := a.clampTTL(tc.in); got != tc.want {
			t.Errorf("clampTTL(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
