package acme_test

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/kubetest"
)

// TestPebbleEAB runs the issuer against a Pebble that requires External
// Account Binding, with the HMAC keys in Secrets of a real kube-apiserver:
// the right key ID and key register an account that then orders; a wrong key,
// an unknown key ID, a key that is not base64url and a missing
// externalAccountBinding fail with errors that say what to fix and contain no
// key.
func TestPebbleEAB(t *testing.T) {
	goodKey, wrongKey := newMACKey(t), newMACKey(t)
	const kid = "kid-podtls"
	pebble := acmetest.StartT(t, acmetest.Options{EAB: map[string]string{kid: goodKey, "kid-other": newMACKey(t)}})
	kube := kubetest.Start(t)
	const ns = "podtls-system"
	kube.CreateNamespace(t, ns, nil)
	ctx := t.Context()

	cfgMap, creds := pebble.RFC2136Config()
	createSecret(t, kube, ns, "podtls-dns-credentials", creds)
	createSecret(t, kube, ns, "podtls-acme-eab", map[string]string{"hmac": goodKey + "\n"}) // as `echo KEY >file` leaves it
	createSecret(t, kube, ns, "eab-wrong", map[string]string{"hmac": wrongKey})
	createSecret(t, kube, ns, "eab-junk", map[string]string{"key": "not base64url!"})
	base := issuerconfig.Config{
		DirectoryURL: pebble.DirectoryURL,
		Email:        "ops@example.test",
		Profile:      "default",
		CABundle:     string(pebble.ACMECABundle()),
		DNS: issuerconfig.DNS{
			Provider:             "rfc2136",
			CredentialsSecretRef: &issuerconfig.SecretRef{Name: "podtls-dns-credentials"},
			Config:               cfgMap,
			RecursiveNameservers: []string{pebble.DNSAddr},
			AuthoritativeNSCheck: ptr(false),
			PropagationTimeout:   issuerconfig.Duration{Duration: 20 * time.Second},
			PollingInterval:      issuerconfig.Duration{Duration: 100 * time.Millisecond},
		},
	}
	// withEAB is base with its own account Secret and, unless secretName is
	// empty, EAB from that Secret; it passes the config parser as a file would.
	withEAB := func(t *testing.T, account, keyID, secretName, secretKey string) issuerconfig.Config {
		t.Helper()
		c := base
		c.AccountSecret = account
		if secretName != "" {
			c.ExternalAccountBinding = &issuerconfig.ExternalAccountBinding{KeyID: keyID,
				HMACKeySecretRef: issuerconfig.SecretKeyRef{Name: secretName, Key: secretKey}}
		}
		parsed, err := issuerconfig.Parse(mustJSON(t, c), providers.Catalog)
		if err != nil {
			t.Fatalf("test config does not parse: %v", err)
		}
		return parsed
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
	// failsWith checks an EnsureAccount error and the account Secret's
	// last-error: both must contain every want and no MAC key.
	failsWith := func(t *testing.T, c issuerconfig.Config, want ...string) {
		t.Helper()
		acct, err := newIssuer(t, c).EnsureAccount(ctx)
		if err == nil {
			t.Fatalf("EnsureAccount succeeded (%+v), want an error", acct)
		}
		sec, gerr := kube.Clientset.CoreV1().Secrets(ns).Get(ctx, c.AccountSecret, metav1.GetOptions{})
		if gerr != nil {
			t.Fatal(gerr)
		}
		st, _ := status.DecodeAccount(sec.Annotations)
		if st.URI != "" {
			t.Errorf("account Secret names an account %q after a failed registration", st.URI)
		}
		t.Logf("error: %v", err)
		for what, msg := range map[string]string{"error": err.Error(), "account Secret last-error": st.LastError} {
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("%s %q does not say %q", what, msg, w)
				}
			}
			for _, k := range []string{goodKey, wrongKey} {
				if strings.Contains(msg, k) {
					t.Errorf("%s contains a MAC key: %q", what, msg)
				}
			}
		}
	}

	t.Run("no EAB configured", func(t *testing.T) {
		failsWith(t, withEAB(t, "no-eab-account", "", "", ""),
			"requires External Account Binding", "externalAccountBinding", "externalAccountRequired")
	})

	t.Run("wrong HMAC key", func(t *testing.T) {
		failsWith(t, withEAB(t, "wrong-key-account", kid, "eab-wrong", ""),
			`key ID "kid-podtls"`, "Secret "+ns+`/eab-wrong key "hmac"`, "refused", "unauthorized")
	})

	t.Run("unknown key ID", func(t *testing.T) {
		failsWith(t, withEAB(t, "unknown-kid-account", "kid-nobody", "podtls-acme-eab", ""),
			`key ID "kid-nobody"`, "refused", "not known")
	})

	t.Run("key of another key ID", func(t *testing.T) {
		failsWith(t, withEAB(t, "other-kid-account", "kid-other", "podtls-acme-eab", ""),
			`key ID "kid-other"`, "refused")
	})

	t.Run("HMAC key not base64url", func(t *testing.T) {
		failsWith(t, withEAB(t, "junk-key-account", kid, "eab-junk", "key"),
			"Secret "+ns+`/eab-junk key "key"`, "base64url")
	})

	var uri string
	t.Run("right key ID and key", func(t *testing.T) {
		c := withEAB(t, "", kid, "podtls-acme-eab", "")
		iss := newIssuer(t, c)
		acct, err := iss.EnsureAccount(ctx)
		if err != nil {
			t.Fatalf("EnsureAccount: %v", err)
		}
		uri = acct.URI
		if uri == "" || !acct.Registered(pebble.DirectoryURL) {
			t.Fatalf("account = %+v, want registered at %s", acct, pebble.DirectoryURL)
		}
		hosts := []string{"eab.example.test", "*.eab.example.test"}
		cert, err := iss.Obtain(ctx, hosts, nil)
		if err != nil {
			t.Fatalf("Obtain with an EAB-bound account: %v", err)
		}
		verifyChain(t, pebble, cert, hosts)
	})
	if uri == "" {
		t.FailNow()
	}

	t.Run("existing account needs no EAB Secret", func(t *testing.T) {
		// EAB binds the account once; afterwards the account key is enough,
		// so a deleted (or rotated) HMAC Secret does not break a restart.
		if err := kube.Clientset.CoreV1().Secrets(ns).Delete(ctx, "podtls-acme-eab", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		acct, err := newIssuer(t, withEAB(t, "", kid, "podtls-acme-eab", "")).EnsureAccount(ctx)
		if err != nil || acct.URI != uri {
			t.Errorf("EnsureAccount after deleting the EAB Secret = %q, %v; want the account %s", acct.URI, err, uri)
		}
	})
}

// newMACKey returns a random 256-bit HMAC key, base64url without padding as
// CAs hand them out.
func newMACKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
