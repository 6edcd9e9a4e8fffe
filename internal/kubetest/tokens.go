package kubetest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TokenIssuer is the service-account token issuer of a control plane started
// WithTokenSigner: the test holds its signing key, so it can mint tokens the
// API server accepts, with any expiry and binding (TokenRequest refuses
// lifetimes under 10 minutes and cannot backdate).
const TokenIssuer = "https://podtls-envtest.invalid"

// TokenSigner is the API server's service-account signing key.
type TokenSigner struct {
	Key              *rsa.PrivateKey
	keyFile, pubFile string
}

// NewTokenSigner writes a fresh RSA signing key pair.
func NewTokenSigner(t testing.TB) *TokenSigner {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &TokenSigner{Key: key, keyFile: filepath.Join(dir, "sa.key"), pubFile: filepath.Join(dir, "sa.pub")}
	if err := os.WriteFile(s.keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// Options make the API server sign and accept tokens with s.
func (s *TokenSigner) Options() []Option {
	return []Option{
		WithAPIServerArg("service-account-issuer", TokenIssuer),
		WithAPIServerArg("service-account-signing-key-file", s.keyFile),
		WithAPIServerArg("service-account-key-file", s.pubFile),
	}
}

// Mint signs a service-account JWT like the API server's, for
// system:serviceaccount:ns:sa with audience, valid from iat to exp; extra
// merges into the "kubernetes.io" claim (namespace and serviceaccount are
// set), e.g. {"secret": {"name": ..., "uid": ...}} for a bound token.
func (s *TokenSigner) Mint(t testing.TB, ns, sa, saUID, audience string, iat, exp time.Time, extra map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	k8s := map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa, "uid": saUID}}
	for k, v := range extra {
		k8s[k] = v
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": TokenIssuer, "sub": "system:serviceaccount:" + ns + ":" + sa, "aud": []string{audience},
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(), "kubernetes.io": k8s,
	})
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.Key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}
