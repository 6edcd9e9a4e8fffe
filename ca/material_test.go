package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
	corev1 "k8s.io/api/core/v1"
)

func TestGenerate(t *testing.T) {
	m, err := Generate(testNow, Backdate)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(testNow); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	root, in := m.Roots[0], m.Intermediate
	if got := root.NotAfter.Sub(testNow); got != RootLifetime {
		t.Errorf("root lifetime %s, want %s", got, RootLifetime)
	}
	if got := in.NotAfter.Sub(testNow); got != IntermediateLifetime {
		t.Errorf("intermediate lifetime %s, want %s", got, IntermediateLifetime)
	}
	if !in.MaxPathLenZero || in.MaxPathLen != 0 || !in.IsCA {
		t.Errorf("intermediate path length: zero=%v len=%d ca=%v", in.MaxPathLenZero, in.MaxPathLen, in.IsCA)
	}
	if root.PublicKeyAlgorithm != x509.ECDSA || in.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithms %s/%s, want ECDSA", root.PublicKeyAlgorithm, in.PublicKeyAlgorithm)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
}

func TestSecretRoundTrip(t *testing.T) {
	m := testMaterial(t)
	data, err := secretData(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{KeyCert, KeyKey, KeyRoots, KeyRootKey} {
		if len(data[k]) == 0 {
			t.Errorf("secret key %s empty", k)
		}
	}
	got, err := MaterialFromSecret(&corev1.Secret{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Validate(testNow); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if !got.Intermediate.Equal(m.Intermediate) || !got.Roots[0].Equal(m.Roots[0]) || got.RootKey == nil {
		t.Error("material differs after the round trip")
	}
}

// corporatePKI builds root -> policy CA -> podtls intermediate, as a company
// would hand it over: no root key for podtls.
func corporatePKI(t *testing.T) (root, policyCA, inter *x509.Certificate, interKey crypto.Signer) {
	return corporatePKIAt(t, testNow)
}

func corporatePKIAt(t *testing.T, now time.Time) (root, policyCA, inter *x509.Certificate, interKey crypto.Signer) {
	t.Helper()
	mk := func(cn string, parent *x509.Certificate, parentKey crypto.Signer, pathLen int) (*x509.Certificate, crypto.Signer) {
		key, err := keyutil.GenerateDefaultSigner()
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: pathLen, MaxPathLenZero: pathLen == 0,
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		c, err := x509util.CreateCertificate(tmpl, parent, key.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		return c, key
	}
	root, rootKey := mk("Corp Root", nil, nil, 2)
	policyCA, policyKey := mk("Corp Policy CA", root, rootKey, 1)
	inter, interKey = mk("podtls at Corp", policyCA, policyKey, 0)
	return root, policyCA, inter, interKey
}

func TestUserProvidedSecret(t *testing.T) {
	root, policyCA, inter, interKey := corporatePKI(t)
	keyPEM, err := marshalKeyPEM(interKey)
	if err != nil {
		t.Fatal(err)
	}
	next := testMaterial(t).Roots[0] // published for a rotation
	sec := &corev1.Secret{Data: map[string][]byte{
		KeyCert:       rootsPEM([]*x509.Certificate{inter, policyCA}),
		KeyKey:        keyPEM,
		KeyRoots:      rootsPEM([]*x509.Certificate{root}),
		KeyExtraRoots: rootsPEM([]*x509.Certificate{next, root}),
	}}
	m, err := MaterialFromSecret(sec)
	if err != nil {
		t.Fatal(err)
	}
	if m.RootKey != nil {
		t.Error("root key found in a user-provided secret")
	}
	a, err := New(m, Config{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got, err := a.Sign(t.Context(), Caller{Namespace: "demo", ServiceAccount: "web"}, makeCSR(t, csrSpec{}), 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(got.ChainPEM), "BEGIN CERTIFICATE"); n != 3 {
		t.Errorf("chain has %d certificates, want leaf + podtls intermediate + policy CA", n)
	}
	if n := strings.Count(string(got.TrustBundlePEM), "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("trust bundle has %d roots, want corporate root + extra root (deduplicated)", n)
	}
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	inters.AddCert(policyCA)
	if _, err := got.Certificate.Verify(x509.VerifyOptions{Roots: a.TrustPool(), Intermediates: inters, CurrentTime: testNow,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("leaf does not verify to the corporate root: %v", err)
	}
	if err := m.RenewIntermediate(testNow, Backdate); err == nil {
		t.Error("RenewIntermediate without a root key succeeded")
	}
}

func TestValidateRejects(t *testing.T) {
	root, policyCA, inter, interKey := corporatePKI(t)
	otherKey, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		t.Fatal(err)
	}
	good := testMaterial(t)
	leafLike, err := x509util.CreateCertificate(&x509.Certificate{
		Subject: pkix.Name{CommonName: "not a ca"}, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour),
	}, good.Intermediate, interKey.Public(), good.Key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		m    *Material
		now  time.Time
		want string
	}{
		{"key does not match", &Material{Intermediate: inter, Key: otherKey, Chain: []*x509.Certificate{policyCA}, Roots: []*x509.Certificate{root}}, testNow, "does not match"},
		{"missing link to the root", &Material{Intermediate: inter, Key: interKey, Roots: []*x509.Certificate{root}}, testNow, "does not chain"},
		{"wrong root", &Material{Intermediate: inter, Key: interKey, Chain: []*x509.Certificate{policyCA}, Roots: good.Roots}, testNow, "does not chain"},
		{"expired", &Material{Intermediate: inter, Key: interKey, Chain: []*x509.Certificate{policyCA}, Roots: []*x509.Certificate{root}}, testNow.Add(100 * 24 * time.Hour), "not now"},
		{"not a CA", &Material{Intermediate: leafLike, Key: interKey, Roots: good.Roots}, testNow, "not a CA"},
		{"no roots", &Material{Intermediate: inter, Key: interKey}, testNow, "no root"},
		{"empty", &Material{}, testNow, "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate(tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestMaterialFromSecretRejects(t *testing.T) {
	data, err := secretData(testMaterial(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(map[string][]byte)
	}{
		{"no tls.crt", func(d map[string][]byte) { delete(d, KeyCert) }},
		{"no tls.key", func(d map[string][]byte) { delete(d, KeyKey) }},
		{"no ca.crt", func(d map[string][]byte) { delete(d, KeyRoots) }},
		{"garbage key", func(d map[string][]byte) {
			d[KeyKey] = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}},
		{"garbage cert", func(d map[string][]byte) { d[KeyCert] = []byte("not a certificate") }},
		{"garbage extra roots", func(d map[string][]byte) { d[KeyExtraRoots] = []byte("nope") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := map[string][]byte{}
			for k, v := range data {
				d[k] = v
			}
			tc.mutate(d)
			if _, err := MaterialFromSecret(&corev1.Secret{Data: d}); err == nil {
				t.Error("MaterialFromSecret succeeded")
			}
		})
	}
}
