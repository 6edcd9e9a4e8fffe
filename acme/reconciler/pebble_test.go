package reconciler

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
)

// TestPebble drives the manager with the real lego issuer against Pebble,
// which validates DNS-01 on a real BIND, with a real kube-apiserver: the
// pieces users meet, minus the node (e2e/acme covers the full controller).
// Skips without the assets unless PODTLS_REQUIRE_ACME is set.
func TestPebble(t *testing.T) {
	pebble := acmetest.StartT(t, acmetest.Options{ChallengeDelay: 100 * time.Millisecond})
	env := kubetest.Start(t)
	ctx := t.Context()
	const ctrlNS = "podtls-system"
	env.CreateNamespace(t, ctrlNS, nil)
	env.CreateNamespace(t, "shop", nil)

	dnsCfg, creds := pebble.RFC2136Config()
	credSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ctrlNS, Name: "podtls-dns-credentials"}, StringData: creds}
	if err := env.Client.Create(ctx, credSecret); err != nil {
		t.Fatal(err)
	}
	f := false
	cfg := issuerconfig.Config{
		DirectoryURL: pebble.DirectoryURL, Profile: "default", CABundle: string(pebble.ACMECABundle()),
		DNS: issuerconfig.DNS{Provider: "rfc2136", CredentialsSecretRef: &issuerconfig.SecretRef{Name: credSecret.Name}, Config: dnsCfg,
			RecursiveNameservers: []string{pebble.DNSAddr}, AuthoritativeNSCheck: &f,
			PropagationTimeout: issuerconfig.Duration{Duration: 20 * time.Second}, PollingInterval: issuerconfig.Duration{Duration: 100 * time.Millisecond}},
		Renewal: issuerconfig.Renewal{MinBackoff: issuerconfig.Duration{Duration: time.Second}, MaxBackoff: issuerconfig.Duration{Duration: 5 * time.Second},
			MaxOrdersPerNamePerHour: 10}, // the default 3 would hold the recovery for an hour
		SecretGracePeriod: issuerconfig.Duration{Duration: time.Minute},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	runManager(t, env, Options{
		ConfigFile: cfgFile, ParseConfig: func(b []byte) (issuerconfig.Config, error) { return issuerconfig.Parse(b, providers.Catalog) }, ConfigPollInterval: time.Second,
		NewIssuer: func(ctx context.Context, c issuerconfig.Config) (Issuer, error) {
			iss, err := acme.NewIssuer(ctx, c, acme.IssuerOptions{Namespace: ctrlNS, Kube: env.Clientset,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				return nil, err
			}
			return iss, nil
		},
	})

	hosts := "shop.example.test,*.shop.example.test"
	key := types.NamespacedName{Namespace: "shop", Name: contract.ExternalSecretName([]string{"shop.example.test", "*.shop.example.test"})}
	start := time.Now()
	for _, name := range []string{"web-1", "web-2"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Annotations: map[string]string{
			contract.Status: `{"version":"test"}`, contract.ExternalHosts: hosts, contract.ExternalSecret: key.Name}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	get := func() (*corev1.Secret, status.External) {
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, key, s); err != nil {
			return nil, status.External{}
		}
		e, _ := status.Decode(s.Annotations)
		return s, e
	}
	poll.Eventually(t, time.Minute, "certificate from Pebble", func() (bool, string) { _, e := get(); return e.Issued(), "not yet" })
	t.Logf("pod created -> certificate in its Secret: %s", time.Since(start).Round(time.Millisecond))

	roots, inters, err := pebble.Chain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(s *corev1.Secret) *x509.Certificate {
		t.Helper()
		if !validPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]) {
			t.Fatal("tls.crt/tls.key do not form a pair")
		}
		rp, ip := x509.NewCertPool(), x509.NewCertPool()
		rp.AppendCertsFromPEM(roots)
		ip.AppendCertsFromPEM(inters)
		ip.AppendCertsFromPEM(s.Data[corev1.TLSCertKey])
		leaf := parseLeaf(s.Data[corev1.TLSCertKey])
		for _, name := range []string{"shop.example.test", "www.shop.example.test"} {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: rp, Intermediates: ip}); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		return leaf
	}
	s, e := get()
	verify(s)
	if e.RenewalSource != status.RenewalARI || e.Directory != pebble.DirectoryURL {
		t.Errorf("status %+v: want ARI renewal from %s", e, pebble.DirectoryURL)
	}

	old := e.Serial
	s.Annotations[status.ForceRenew] = "1"
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	poll.Eventually(t, time.Minute, "forced renewal", func() (bool, string) { _, e := get(); return e.Serial != old && e.ForceRenew == "", "not yet" })
	t.Logf("forced renewal: %s", time.Since(start).Round(time.Millisecond))
	s, e = get()
	verify(s)

	// The ACME server goes away: a clear status and Event, the certificate
	// stays; when it is back (a new Pebble: new roots, no accounts), the
	// manager recovers by itself.
	pebble.StopACME()
	crt, serial := string(s.Data[corev1.TLSCertKey]), e.Serial
	s.Annotations[status.ForceRenew] = "2"
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, time.Minute, "failure recorded", func() (bool, string) { _, e := get(); return e.Failures > 0, "not yet" })
	s, e = get()
	if string(s.Data[corev1.TLSCertKey]) != crt || e.Serial != serial || e.LastError == "" || !e.NextAttempt.After(e.LastAttempt) {
		t.Errorf("after a failure: data kept %v, status %+v", string(s.Data[corev1.TLSCertKey]) == crt, e)
	}
	t.Logf("last-error with Pebble down: %s", e.LastError)
	poll.Eventually(t, 30*time.Second, "event "+status.EventFailed+" on web-1", hasEvent(env.Client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}, status.EventFailed))
	if err := pebble.StartACME(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	poll.Eventually(t, time.Minute, "recovered", func() (bool, string) {
		_, e := get()
		if e.Serial != serial && !e.Failing() {
			return true, ""
		}
		return false, "not yet"
	})
	t.Logf("ACME server back (new account needed) -> renewed: %s", time.Since(start).Round(time.Millisecond))
	roots, inters, err = pebble.Chain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, _ = get()
	verify(s)
}
