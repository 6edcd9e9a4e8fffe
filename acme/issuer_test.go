package acme

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/renewal"
)

func testLeaf(t *testing.T, key *ecdsa.PrivateKey, notBefore, notAfter time.Time, names ...string) ([]byte, *x509.Certificate) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "test"},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: names}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), leaf
}

func TestLifetimeRenewal(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	_, leaf := testLeaf(t, key, nb, nb.Add(90*24*time.Hour))
	if got, want := LifetimeRenewal(leaf, 2.0/3), nb.Add(60*24*time.Hour); !got.Equal(want) {
		t.Errorf("LifetimeRenewal = %s, want %s", got, want)
	}
	if got := LifetimeRenewal(leaf, 0.5); !got.Equal(nb.Add(45 * 24 * time.Hour)) {
		t.Errorf("LifetimeRenewal(0.5) = %s", got)
	}
}

func TestARIRenewal(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	_, leaf := testLeaf(t, key, now.Add(-24*time.Hour), now.Add(5*24*time.Hour))
	tests := []struct {
		name        string
		w           window
		retry       time.Duration
		lo, hi      time.Time // At in [lo, hi]
		wantRecheck time.Duration
	}{
		{"future window", window{now.Add(time.Hour), now.Add(3 * time.Hour)}, 2 * time.Hour, now.Add(time.Hour), now.Add(3 * time.Hour), 2 * time.Hour},
		{"window begun: now", window{now.Add(-time.Hour), now.Add(-time.Minute)}, 0, now, now, ariDefaultRecheck},
		{"empty window", window{now.Add(time.Hour), now.Add(time.Hour)}, time.Second, now.Add(time.Hour), now.Add(time.Hour), ariMinRecheck},
		{"window past NotAfter", window{now.Add(10 * 24 * time.Hour), now.Add(11 * 24 * time.Hour)}, 48 * time.Hour, leaf.NotAfter, leaf.NotAfter, ariMaxRecheck},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 20 { // random point: check it stays inside
				r := ariRenewal(tt.w, tt.retry, leaf, now, renewal.Draw())
				if r.Source != status.RenewalARI || r.At.Before(tt.lo) || r.At.After(tt.hi) || r.RecheckAfter != tt.wantRecheck {
					t.Fatalf("ariRenewal = %+v, want At in [%s, %s], recheck %s", r, tt.lo, tt.hi, tt.wantRecheck)
				}
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8, err := marshalKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	good := map[string][]byte{
		"pkcs8": pkcs8,
		"sec1":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		"pkcs1": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
	}
	for name, b := range good {
		if _, err := parseKey(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string][]byte{
		"empty":       nil,
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	}
	for name, b := range bad {
		if _, err := parseKey(b); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestNewKey(t *testing.T) {
	for _, kt := range issuerconfig.KeyTypes {
		if kt == issuerconfig.KeyRSA4096 && testing.Short() {
			continue
		}
		k, err := newKey(kt)
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if _, err := marshalKey(k); err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
	}
	if _, err := newKey("dsa"); err == nil {
		t.Error("unknown key type accepted")
	}
}

func TestNewCertificate(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	chain, _ := testLeaf(t, key, now, now.Add(time.Hour), "shop.example.test", "*.shop.example.test")
	c, err := newCertificate(chain, key, []string{"shop.example.test", "*.SHOP.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(c.KeyPEM, []byte("-----BEGIN PRIVATE KEY-----")) || c.Leaf == nil || !bytes.Equal(c.ChainPEM, chain) {
		t.Errorf("certificate = %+v", c)
	}
	if _, err := newCertificate(chain, other, []string{"shop.example.test"}); err == nil || !strings.Contains(err.Error(), "not for the key") {
		t.Errorf("other key: %v", err)
	}
	if _, err := newCertificate(chain, key, []string{"api.example.test"}); err == nil || !strings.Contains(err.Error(), "does not name api.example.test") {
		t.Errorf("missing name: %v", err)
	}
	if _, err := newCertificate([]byte("nope"), key, nil); err == nil {
		t.Error("garbage accepted")
	}
}

func TestContextTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c := withContext(ctx, srv.Client())
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if _, err := c.Get(srv.URL); !errors.Is(err, context.Canceled) {
		t.Errorf("request after cancel = %v, want context.Canceled", err)
	}
}

func TestNewIssuerChecks(t *testing.T) {
	cfg := issuerconfig.Config{DNS: issuerconfig.DNS{Provider: "rfc2136", Config: map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}}}
	kube := fake.NewClientset()
	if _, err := NewIssuer(t.Context(), cfg, IssuerOptions{Namespace: "x"}); err == nil {
		t.Error("no Kubernetes client accepted")
	}
	if _, err := NewIssuer(t.Context(), issuerconfig.Config{}, IssuerOptions{Namespace: "x", Kube: kube}); err == nil {
		t.Error("invalid config accepted")
	}
	withSecret := cfg
	withSecret.DNS.CredentialsSecretRef = &issuerconfig.SecretRef{Name: "missing"}
	if _, err := NewIssuer(t.Context(), withSecret, IssuerOptions{Namespace: "x", Kube: kube}); err == nil || !strings.Contains(err.Error(), "x/missing") {
		t.Errorf("missing credentials Secret: %v", err)
	}
	iss, err := NewIssuer(t.Context(), cfg, IssuerOptions{Namespace: "x", Kube: kube})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Directory() != issuerconfig.LetsEncryptStaging {
		t.Errorf("Directory() = %s", iss.Directory())
	}
}

func TestLegoLogLevels(t *testing.T) {
	var buf bytes.Buffer
	setLegoLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer setLegoLogger(slog.New(slog.DiscardHandler))
	a := slogAdapter{}
	a.Printf("[INFO] [%s] acme: Obtaining", "shop.example.test")
	a.Printf("[WARN] cleaning up failed")
	a.Fatalf("never exits")
	out := buf.String()
	for _, want := range []string{`level=DEBUG msg="[shop.example.test] acme: Obtaining"`, `level=WARN msg="cleaning up failed"`, `level=WARN msg="never exits"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %s:\n%s", want, out)
		}
	}
}

// ariServer serves a directory (with renewalInfo when ari is set) and the
// renewalInfo endpoint answering with status and body.
func ariServer(t *testing.T, ari bool, status int, body, retryAfter string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/dir":
			dir := `{"newNonce":"` + srv.URL + `/nonce","newAccount":"` + srv.URL + `/acct","newOrder":"` + srv.URL + `/order"`
			if ari {
				dir += `,"renewalInfo":"` + srv.URL + `/ari"`
			}
			w.Write([]byte(dir + "}"))
		case strings.HasPrefix(r.URL.Path, "/ari/"):
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(status)
			w.Write([]byte(body))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRenewalTime(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now().UTC().Truncate(time.Second)
	_, leaf := testLeaf(t, key, now.Add(-time.Hour), now.Add(89*24*time.Hour))
	leaf.AuthorityKeyId = []byte{1, 2, 3}
	byLifetime := LifetimeRenewal(leaf, issuerconfig.DefaultLifetimeFraction)
	wStart, wEnd := now.Add(50*24*time.Hour), now.Add(52*24*time.Hour)
	window := `{"suggestedWindow":{"start":"` + wStart.Format(time.RFC3339) + `","end":"` + wEnd.Format(time.RFC3339) + `"}}`
	tests := []struct {
		name          string
		ariOn, offers bool
		status        int
		body, retry   string
		wantSource    string
		wantRecheck   time.Duration
	}{
		{"ari window", true, true, 200, window, "21600", status.RenewalARI, 6 * time.Hour},
		{"ari without Retry-After", true, true, 200, window, "", status.RenewalARI, ariDefaultRecheck},
		{"server without ari", true, false, 200, window, "", status.RenewalLifetime, 0},
		{"ari disabled", false, true, 200, window, "", status.RenewalLifetime, 0},
		{"ari error status", true, true, 500, `{"type":"serverInternal"}`, "", status.RenewalLifetime, ariErrorRecheck},
		{"ari bad json", true, true, 200, `{`, "", status.RenewalLifetime, ariErrorRecheck},
		{"ari inverted window", true, true, 200, `{"suggestedWindow":{"start":"` + wEnd.Format(time.RFC3339) + `","end":"` + wStart.Format(time.RFC3339) + `"}}`, "", status.RenewalLifetime, ariErrorRecheck},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := ariServer(t, tt.offers, tt.status, tt.body, tt.retry)
			cfg := issuerconfig.Config{DirectoryURL: srv.URL + "/dir", Renewal: issuerconfig.Renewal{ARI: &tt.ariOn},
				DNS: issuerconfig.DNS{Provider: "rfc2136", Config: map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}}}
			iss, err := NewIssuer(t.Context(), cfg, IssuerOptions{Namespace: "x", Kube: fake.NewClientset(), HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			r, err := iss.RenewalTime(t.Context(), leaf)
			if err != nil {
				t.Fatal(err)
			}
			if r.Source != tt.wantSource || r.RecheckAfter != tt.wantRecheck {
				t.Fatalf("RenewalTime = %+v, want source %s, recheck %s", r, tt.wantSource, tt.wantRecheck)
			}
			if r.Source == status.RenewalARI && (r.At.Before(wStart) || r.At.After(wEnd)) {
				t.Errorf("At %s outside the window", r.At)
			}
			if r.Source == status.RenewalLifetime && !r.At.Equal(byLifetime) {
				t.Errorf("At %s, want %s", r.At, byLifetime)
			}
		})
	}
}

func TestAccountKey(t *testing.T) {
	cfg := issuerconfig.Config{DNS: issuerconfig.DNS{Provider: "rfc2136", Config: map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}}}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	tests := []struct {
		name     string
		existing map[string][]byte // nil: no Secret
		wantErr  string
		sameKey  []byte // the Secret must still hold exactly this
	}{
		{name: "created when absent"},
		{name: "empty Secret filled in", existing: map[string][]byte{}},
		{name: "lego CLI key kept", existing: map[string][]byte{status.AccountKeyFile: sec1PEM}, sameKey: sec1PEM},
		{name: "unreadable key never overwritten", existing: map[string][]byte{status.AccountKeyFile: []byte("garbage")},
			wantErr: "ns/podtls-acme-account key account.key", sameKey: []byte("garbage")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := fake.NewClientset()
			if tt.existing != nil {
				sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: issuerconfig.DefaultAccountSecret, Namespace: "ns"}, Data: tt.existing}
				if _, err := kube.CoreV1().Secrets("ns").Create(t.Context(), sec, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			iss, err := NewIssuer(t.Context(), cfg, IssuerOptions{Namespace: "ns", Kube: kube})
			if err != nil {
				t.Fatal(err)
			}
			key, _, err := iss.accountKey(t.Context())
			sec, gerr := kube.CoreV1().Secrets("ns").Get(t.Context(), issuerconfig.DefaultAccountSecret, metav1.GetOptions{})
			if gerr != nil {
				t.Fatal(gerr)
			}
			stored := sec.Data[status.AccountKeyFile]
			if tt.sameKey != nil && !bytes.Equal(stored, tt.sameKey) {
				t.Errorf("stored key changed")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("accountKey error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			again, err := parseKey(stored)
			if err != nil || !publicKeysEqual(again.Public(), key.Public()) {
				t.Errorf("returned key is not the stored one (%v)", err)
			}
			if tt.existing == nil && (sec.Labels[contract.ComponentLabel] != status.ComponentACMEAccount || sec.Labels[contract.ManagedByLabel] != contract.ManagedByValue) {
				t.Errorf("labels = %v", sec.Labels)
			}
		})
	}
}
