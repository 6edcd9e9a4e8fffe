package acme_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/kubetest"
)

// TestPebble runs the issuer against a real Pebble that validates DNS-01
// challenges on a real BIND, with the account and credentials Secrets in a
// real kube-apiserver. Skips without the assets unless PODTLS_REQUIRE_ACME /
// PODTLS_REQUIRE_ENVTEST are set.
func TestPebble(t *testing.T) {
	pebble := acmetest.StartT(t, acmetest.Options{})
	kube := kubetest.Start(t)
	const ns = "podtls-system"
	kube.CreateNamespace(t, ns, nil)
	ctx := t.Context()

	cfgMap, creds := pebble.RFC2136Config()
	createSecret(t, kube, ns, "podtls-dns-credentials", creds)
	cfg := issuerconfig.Config{
		DirectoryURL: pebble.DirectoryURL,
		Email:        "ops@example.test",
		Profile:      "default", // otherwise Pebble picks a random profile
		CABundle:     string(pebble.ACMECABundle()),
		DNS: issuerconfig.DNS{
			Provider:             "rfc2136",
			CredentialsSecretRef: &issuerconfig.SecretRef{Name: "podtls-dns-credentials"},
			Config:               cfgMap,
			RecursiveNameservers: []string{pebble.DNSAddr},
			AuthoritativeNSCheck: ptr(false), // it would dial port 53
			PropagationTimeout:   issuerconfig.Duration{Duration: 20 * time.Second},
			PollingInterval:      issuerconfig.Duration{Duration: 100 * time.Millisecond},
		},
	}
	if _, err := issuerconfig.Parse(mustJSON(t, cfg), providers.Catalog); err != nil {
		t.Fatalf("test config does not parse: %v", err)
	}
	opts := acme.IssuerOptions{Namespace: ns, Kube: kube.Clientset, HTTPClient: fastPebbleClient(pebble.HTTPClient()),
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), UserAgent: "podtls/test"}
	newIssuer := func(t *testing.T, c issuerconfig.Config) *acme.Issuer {
		t.Helper()
		iss, err := acme.NewIssuer(ctx, c, opts)
		if err != nil {
			t.Fatalf("NewIssuer: %v", err)
		}
		return iss
	}
	iss := newIssuer(t, cfg)

	var uri string
	t.Run("account is created once and shared", func(t *testing.T) {
		// Two replicas at once: both must end up with the same key and account.
		other := newIssuer(t, cfg)
		var wg sync.WaitGroup
		accts := make([]status.Account, 2)
		errs := make([]error, 2)
		for n, is := range []*acme.Issuer{iss, other} {
			wg.Go(func() { accts[n], errs[n] = is.EnsureAccount(ctx) })
		}
		wg.Wait()
		for n := range errs {
			if errs[n] != nil {
				t.Fatalf("EnsureAccount %d: %v", n, errs[n])
			}
		}
		uri = accts[0].URI
		if uri == "" || accts[1].URI != uri {
			t.Fatalf("replicas disagree on the account: %q vs %q", uri, accts[1].URI)
		}
		again, err := newIssuer(t, cfg).EnsureAccount(ctx)
		if err != nil || again.URI != uri {
			t.Fatalf("EnsureAccount again = %q, %v; want %q", again.URI, err, uri)
		}
		sec, err := kube.Clientset.CoreV1().Secrets(ns).Get(ctx, issuerconfig.DefaultAccountSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := status.DecodeAccount(sec.Annotations)
		if err != nil || !st.Registered(pebble.DirectoryURL) || st.URI != uri || st.Contact != "mailto:ops@example.test" || st.RegisteredAt.IsZero() {
			t.Errorf("account Secret status = %+v, %v", st, err)
		}
		if sec.Labels[contract.ComponentLabel] != status.ComponentACMEAccount || !bytes.Contains(sec.Data[status.AccountKeyFile], []byte("BEGIN PRIVATE KEY")) {
			t.Errorf("account Secret labels %v / key missing", sec.Labels)
		}
	})

	hosts := []string{"shop.example.test", "*.shop.example.test"}
	var first *acme.Certificate
	t.Run("apex and wildcard", func(t *testing.T) {
		start := time.Now()
		cert, err := iss.Obtain(ctx, hosts, nil)
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		t.Logf("issuance of %v took %s", hosts, time.Since(start).Round(time.Millisecond))
		first = cert
		verifyChain(t, pebble, cert, hosts)
	})
	if first == nil {
		t.FailNow()
	}

	t.Run("renewal time from ARI", func(t *testing.T) {
		wStart := time.Now().Add(time.Hour).Truncate(time.Second)
		wEnd := wStart.Add(2 * time.Hour)
		if err := pebble.SetRenewalInfo(ctx, first.ChainPEM, wStart, wEnd); err != nil {
			t.Fatal(err)
		}
		r, err := iss.RenewalTime(ctx, first.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		if r.Source != status.RenewalARI || r.At.Before(wStart) || !r.At.Before(wEnd) || r.RecheckAfter <= 0 {
			t.Errorf("RenewalTime = %+v, want ARI inside [%s, %s)", r, wStart, wEnd)
		}
		noARI := cfg
		noARI.Renewal.ARI = ptr(false)
		r, err = newIssuer(t, noARI).RenewalTime(ctx, first.Leaf)
		want := acme.LifetimeRenewal(first.Leaf, issuerconfig.DefaultLifetimeFraction)
		if err != nil || r.Source != status.RenewalLifetime || !r.At.Equal(want) {
			t.Errorf("RenewalTime without ARI = %+v, %v; want lifetime at %s", r, err, want)
		}
	})

	t.Run("renewal replaces the old certificate", func(t *testing.T) {
		cert, err := iss.Obtain(ctx, hosts, first.Leaf)
		if err != nil {
			t.Fatalf("Obtain with replaces: %v", err)
		}
		verifyChain(t, pebble, cert, hosts)
		if cert.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || bytes.Equal(cert.KeyPEM, first.KeyPEM) {
			t.Error("renewal reused the serial or the key")
		}
	})

	t.Run("key type and profile", func(t *testing.T) {
		c := cfg
		c.KeyType, c.Profile = issuerconfig.KeyRSA2048, "shortlived"
		cert, err := newIssuer(t, c).Obtain(ctx, []string{"rsa.example.test"}, nil)
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		verifyChain(t, pebble, cert, []string{"rsa.example.test"})
		if _, ok := cert.Leaf.PublicKey.(*rsa.PublicKey); !ok {
			t.Errorf("leaf key is %T, want RSA", cert.Leaf.PublicKey)
		}
		if life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore); life > 7*24*time.Hour {
			t.Errorf("shortlived profile gave a %s certificate", life)
		}
		c.Profile = "forever"
		_, err = newIssuer(t, c).Obtain(ctx, []string{"rsa.example.test"}, nil)
		if err == nil || !strings.Contains(err.Error(), `no profile "forever" (it has default, shortlived)`) {
			t.Errorf("unknown profile: %v", err)
		}
	})

	t.Run("wrong TSIG secret is a clear error", func(t *testing.T) {
		bad := map[string]string{"RFC2136_TSIG_KEY": creds["RFC2136_TSIG_KEY"], "RFC2136_TSIG_SECRET": "d3JvbmctdHNpZy1zZWNyZXQtd3Jvbmc="}
		createSecret(t, kube, ns, "wrong-tsig", bad)
		c := cfg
		c.DNS.CredentialsSecretRef = &issuerconfig.SecretRef{Name: "wrong-tsig"}
		start := time.Now()
		_, err := newIssuer(t, c).Obtain(ctx, []string{"bad.example.test"}, nil)
		if err == nil {
			t.Fatal("Obtain with a wrong TSIG secret succeeded")
		}
		t.Logf("error after %s: %v", time.Since(start).Round(time.Millisecond), err)
		msg := err.Error()
		if !strings.Contains(msg, "bad.example.test") || !strings.Contains(msg, "DNS update failed") {
			t.Errorf("error does not say which name and what failed: %v", err)
		}
		if strings.Contains(msg, bad["RFC2136_TSIG_SECRET"]) || strings.Contains(msg, creds["RFC2136_TSIG_SECRET"]) {
			t.Error("error leaks the TSIG secret")
		}
	})

	t.Run("missing credential is named", func(t *testing.T) {
		createSecret(t, kube, ns, "no-secret", map[string]string{"RFC2136_TSIG_KEY": "acme-key"})
		c := cfg
		c.DNS.CredentialsSecretRef = &issuerconfig.SecretRef{Name: "no-secret"}
		_, err := acme.NewIssuer(ctx, c, opts)
		if err == nil || !strings.Contains(err.Error(), "RFC2136_TSIG_SECRET") {
			t.Errorf("NewIssuer = %v, want an error naming RFC2136_TSIG_SECRET", err)
		}
	})

	t.Run("a new contact updates the account", func(t *testing.T) {
		c := cfg
		c.Email = "security@example.test"
		acct, err := newIssuer(t, c).EnsureAccount(ctx)
		if err != nil || acct.URI != uri || acct.Contact != "mailto:security@example.test" {
			t.Errorf("EnsureAccount with a new e-mail = %+v, %v; want account %s with the new contact", acct, err, uri)
		}
	})

	t.Run("external account binding without its Secret", func(t *testing.T) {
		// A new account (own key Secret) must register with EAB; the HMAC
		// Secret is missing, which the error and the account status say.
		c := cfg
		c.AccountSecret = "eab-account"
		c.ExternalAccountBinding = &issuerconfig.ExternalAccountBinding{KeyID: "kid-1", HMACKeySecretRef: issuerconfig.SecretKeyRef{Name: "podtls-acme-eab"}}
		_, err := newIssuer(t, c).EnsureAccount(ctx)
		if err == nil || !strings.Contains(err.Error(), "external account binding Secret "+ns+"/podtls-acme-eab") {
			t.Fatalf("EnsureAccount = %v, want an error naming the EAB Secret", err)
		}
		sec, err := kube.Clientset.CoreV1().Secrets(ns).Get(ctx, "eab-account", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := status.DecodeAccount(sec.Annotations); !strings.Contains(st.LastError, "podtls-acme-eab") || st.URI != "" {
			t.Errorf("account status = %+v, want the error recorded and no account", st)
		}
	})

	t.Run("a restarted server gets the account again", func(t *testing.T) {
		// Pebble forgets everything on restart, like a CA that deactivated
		// the account: the next order registers again and succeeds.
		pebble.StopACME()
		if err := pebble.StartACME(ctx); err != nil {
			t.Fatal(err)
		}
		cert, err := iss.Obtain(ctx, []string{"again.example.test"}, nil)
		if err != nil {
			t.Fatalf("Obtain after a Pebble restart: %v", err)
		}
		verifyChain(t, pebble, cert, []string{"again.example.test"})
		acct, err := iss.EnsureAccount(ctx)
		if err != nil || acct.URI == "" || acct.URI == uri {
			t.Errorf("account after restart = %q, %v; want a new registration (was %q)", acct.URI, err, uri)
		}
	})

	t.Run("cancelled order stops", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := iss.Obtain(cctx, []string{"gone.example.test"}, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Obtain with a cancelled context = %v, want context.Canceled", err)
		}
		// Cancelled while lego waits for propagation: it stops at the next
		// check (lego first sleeps one polling interval, which it does not
		// interrupt) instead of finishing the order.
		slow := cfg
		slow.DNS.PollingInterval = issuerconfig.Duration{Duration: time.Second}
		cctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := newIssuer(t, slow).Obtain(cctx, []string{"slow.example.test"}, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Obtain cancelled mid-order = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Obtain returned %s after its context ended", d)
		}
		t.Logf("cancelled order returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	})
}

func verifyChain(t *testing.T, pebble *acmetest.Env, cert *acme.Certificate, hosts []string) {
	t.Helper()
	roots, inters, err := pebble.Chain(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	rootPool.AppendCertsFromPEM(roots)
	interPool.AppendCertsFromPEM(inters)
	// tls.crt must be the full chain: the intermediate comes from it, not from Pebble.
	served := x509.NewCertPool()
	rest := cert.ChainPEM
	n := 0
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			served.AddCert(c)
		}
		n++
	}
	if n < 2 {
		t.Fatalf("tls.crt holds %d certificates, want leaf + intermediate", n)
	}
	for _, h := range hosts {
		name := strings.Replace(h, "*", "anything", 1)
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: rootPool, Intermediates: served}); err != nil {
			t.Errorf("verify %s against Pebble's root: %v", name, err)
		}
	}
	if !bytes.HasPrefix(cert.KeyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Error("key is not PKCS#8 PEM")
	}
	_ = interPool
}

// fastPebbleClient works around Pebble sending no Retry-After when a
// challenge is submitted: lego then polls the authorization once at once and
// next only after 5 s. Holding the challenge response back 100 ms lets
// Pebble's validation finish before that first poll, so an order takes well
// under a second instead of 5 s per name. Test-only: the product path never
// delays or alters server responses.
func fastPebbleClient(base *http.Client) *http.Client {
	c := *base
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = pebbleTransport{rt}
	return &c
}

type pebbleTransport struct{ base http.RoundTripper }

func (p pebbleTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.base.RoundTrip(r)
	if err == nil && r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/chalZ/") {
		time.Sleep(100 * time.Millisecond)
	}
	return resp, err
}

func createSecret(t *testing.T, kube *kubetest.Env, ns, name string, data map[string]string) {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
	if _, err := kube.Clientset.CoreV1().Secrets(ns).Create(t.Context(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = tWriter{}

func mustJSON(t *testing.T, c issuerconfig.Config) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
