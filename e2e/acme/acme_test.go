package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/ca/acme/config"
	"github.com/podtls/podtls/ca/acme/status"
	"github.com/podtls/podtls/webhook/inject"
)

// TestACME runs every scenario against one API server, BIND, Pebble and
// podtls-controller, in order: the fault scenarios stop servers and restart
// the controller, so they come last.
func TestACME(t *testing.T) {
	s := newSuite(t)

	t.Run("annotated pod gets a verified certificate", s.testIssue)
	t.Run("wildcard and apex in one certificate", s.testWildcard)
	t.Run("two pods with the same hosts share one Secret", s.testShared)
	t.Run("forced renewal reaches a running sidecar without restart", s.testForcedRenewal)
	t.Run("ARI window moves the renewal", s.testARI)
	t.Run("BIND down: failures, backoff, recovery", s.testDNSDown)
	t.Run("wrong TSIG secret: failures, recovery after the fix", s.testWrongTSIG)
	t.Run("Pebble down: failures, recovery with the new Pebble", s.testACMEDown)
	t.Run("controller restarted mid-order: one certificate, one Secret", s.testRestartMidOrder)
}

func (s *suite) testIssue(t *testing.T) {
	const ns, host = "acme-issue", "www.example.test"
	s.namespace(t, ns)
	begin := time.Now()
	pod := s.createPod(t, ns, "web-0", host)
	name := inject.ExternalSecretName([]string{host})
	sec, st := s.waitSecret(t, ns, name, 30*time.Second, "issuance", issued())
	elapsed := time.Since(begin)
	t.Logf("end to end: pod created -> certificate in Secret %s: %s", name, elapsed.Round(time.Millisecond))

	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	chain := sec.Data[corev1.TLSCertKey]
	opensslVerify(t, roots, chain, []string{host})
	s.checkSecret(t, sec, st, []string{host})

	msgs := s.waitEvent(t, ns, pod.Name, status.EventIssued)
	t.Logf("event %s: %s", status.EventIssued, msgs[0])

	acct, err := s.kube.Clientset.CoreV1().Secrets(ctrlNS).Get(t.Context(), "podtls-acme-account", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("account Secret: %v", err)
	}
	a, err := status.DecodeAccount(acct.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	if len(acct.Data[status.AccountKeyFile]) == 0 || !a.Registered(s.acme.DirectoryURL) {
		t.Errorf("account Secret: key %d bytes, status %+v", len(acct.Data[status.AccountKeyFile]), a)
	}
}

// checkSecret verifies the Secret's type, labels, key pair and status annotations.
func (s *suite) checkSecret(t *testing.T, sec *corev1.Secret, st status.External, hosts []string) {
	t.Helper()
	if sec.Type != corev1.SecretTypeTLS {
		t.Errorf("type %s, want %s", sec.Type, corev1.SecretTypeTLS)
	}
	if sec.Labels[status.ManagedByLabel] != status.ManagedByValue || sec.Labels[status.ComponentLabel] != status.ComponentExternalCert {
		t.Errorf("labels %v", sec.Labels)
	}
	pair, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatalf("tls.crt and tls.key do not form a pair: %v", err)
	}
	if k, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", pair.PrivateKey)
	}
	leaf := leafOf(t, sec.Data[corev1.TLSCertKey])
	want := slices.Sorted(slices.Values(hosts))
	if got := slices.Sorted(slices.Values(leaf.DNSNames)); !slices.Equal(got, want) {
		t.Errorf("leaf names %v, want %v", got, want)
	}
	if !slices.Equal(slices.Sorted(slices.Values(st.Hosts)), want) {
		t.Errorf("status hosts %v, want %v", st.Hosts, want)
	}
	if st.Serial != serialHex(leaf) {
		t.Errorf("status serial %s, leaf serial %s", st.Serial, serialHex(leaf))
	}
	if !st.NotAfter.Equal(leaf.NotAfter.Truncate(time.Second)) || !st.NotBefore.Equal(leaf.NotBefore.Truncate(time.Second)) {
		t.Errorf("status validity %s..%s, leaf %s..%s", st.NotBefore, st.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}
	if st.Directory != s.acme.DirectoryURL {
		t.Errorf("status directory %q, want %q", st.Directory, s.acme.DirectoryURL)
	}
	if st.CertIssuer == "" || !strings.Contains(st.CertIssuer, leaf.Issuer.CommonName) {
		t.Errorf("status issuer %q, leaf issuer %q", st.CertIssuer, leaf.Issuer)
	}
	if !st.RenewAt.After(time.Now()) || !st.RenewAt.Before(leaf.NotAfter) {
		t.Errorf("renew-at %s, want between now and not-after %s", st.RenewAt, leaf.NotAfter)
	}
	if st.RenewalSource != status.RenewalARI {
		t.Errorf("renewal source %q, want %q (Pebble offers ARI)", st.RenewalSource, status.RenewalARI)
	}
	if st.LastSuccess.IsZero() || st.LastError != "" || st.Failures != 0 {
		t.Errorf("status after success: last success %s, last error %q, failures %d", st.LastSuccess, st.LastError, st.Failures)
	}
}

func (s *suite) testWildcard(t *testing.T) {
	const ns = "acme-wildcard"
	hosts := []string{"*.shop.example.test", "shop.example.test"}
	s.namespace(t, ns)
	begin := time.Now()
	s.createPod(t, ns, "shop-0", strings.Join(hosts, ","))
	sec, st := s.waitSecret(t, ns, inject.ExternalSecretName(hosts), 30*time.Second, "issuance", issued())
	t.Logf("wildcard + apex issued in %s", time.Since(begin).Round(time.Millisecond))
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], hosts)
	s.checkSecret(t, sec, st, hosts)
}

func (s *suite) testShared(t *testing.T) {
	const ns = "acme-shared"
	s.namespace(t, ns)
	a := s.createPod(t, ns, "shared-a", "b.example.test,a.example.test")
	b := s.createPod(t, ns, "shared-b", "A.example.test,b.example.test")
	name := inject.ExternalSecretName([]string{"a.example.test", "b.example.test"})
	if a.Annotations["podtls.io/external-secret"] != b.Annotations["podtls.io/external-secret"] {
		t.Fatalf("pods name different Secrets: %s vs %s", a.Annotations["podtls.io/external-secret"], b.Annotations["podtls.io/external-secret"])
	}
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "issuance", issued())
	s.waitEvent(t, ns, a.Name, status.EventIssued)
	s.waitEvent(t, ns, b.Name, status.EventIssued)
	// A third user arriving later reuses the certificate, too.
	c := s.createPod(t, ns, "shared-c", "a.example.test,b.example.test")
	time.Sleep(2 * time.Second)
	sec, st2 := s.waitSecret(t, ns, name, time.Second, "status", issued())
	if st2.Serial != st.Serial {
		t.Fatalf("serial changed from %s to %s: a second issuance for the same hosts", st.Serial, st2.Serial)
	}
	if got := s.managedSecrets(t, ns); len(got) != 1 {
		t.Fatalf("%d managed Secrets in %s, want 1", len(got), ns)
	}
	for _, p := range []string{a.Name, b.Name} {
		if n := len(s.events(t, ns, p, status.EventIssued)) + len(s.events(t, ns, p, status.EventRenewed)); n != 1 {
			t.Errorf("pod %s: %d issued/renewed events, want exactly 1 (one issuance)", p, n)
		}
	}
	if c.Annotations["podtls.io/external-secret"] != sec.Name {
		t.Errorf("third pod names Secret %q", c.Annotations["podtls.io/external-secret"])
	}
}

func (s *suite) testForcedRenewal(t *testing.T) {
	const ns, host = "acme-renew", "renew.example.test"
	s.namespace(t, ns)
	pod := s.createPod(t, ns, "renew-0", host)
	name := inject.ExternalSecretName([]string{host})
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "issuance", issued())
	first := st.Serial

	// The Secret volume of the pod, kept in sync the way kubelet does.
	extDir := filepath.Join(t.TempDir(), name)
	s.kubeletSync(t, ns, name, extDir)
	inbound := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sc := startSidecar(t, inbound, extDir)
	pid := sc.pid()
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var served string
	eventually(t, 10*time.Second, "sidecar serves the first certificate", func() (bool, string) {
		served, err = sClientSerial(t.Context(), inbound, host, roots)
		if err != nil {
			return false, err.Error()
		}
		return served == first, "serves " + served
	})

	begin := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, status.ForceRenew, fmt.Sprint(time.Now().Unix()))
	if _, err := s.kube.Clientset.CoreV1().Secrets(ns).Patch(t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sec, st := s.waitSecret(t, ns, name, 30*time.Second, "forced renewal", issued(first))
	renewed := time.Since(begin)
	if st.ForceRenew != "" {
		t.Errorf("%s still set after the renewal: %q", status.ForceRenew, st.ForceRenew)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], []string{host})
	s.waitEvent(t, ns, pod.Name, status.EventRenewed)

	eventually(t, 20*time.Second, "sidecar serves the renewed certificate", func() (bool, string) {
		served, err = sClientSerial(t.Context(), inbound, host, roots)
		if err != nil {
			return false, err.Error()
		}
		return served == st.Serial, "serves " + served
	})
	t.Logf("forced renewal: serial %s -> %s; Secret updated after %s, served by the sidecar after %s",
		first, st.Serial, renewed.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	if !sc.running() || sc.pid() != pid {
		t.Fatal("the sidecar was restarted or died")
	}
}

// testARI makes Pebble suggest a renewal window that has already begun. The
// manager asks for ARI again after Pebble's Retry-After (6 h) or after a
// restart; the test restarts the controller instead of waiting hours.
func (s *suite) testARI(t *testing.T) {
	const ns, host = "acme-ari", "ari.example.test"
	s.namespace(t, ns)
	pod := s.createPod(t, ns, "ari-0", host)
	name := inject.ExternalSecretName([]string{host})
	sec, st := s.waitSecret(t, ns, name, 30*time.Second, "issuance", issued())
	first := st.Serial
	now := time.Now()
	if err := s.acme.SetRenewalInfo(t.Context(), sec.Data[corev1.TLSCertKey], now.Add(-2*time.Hour), now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	s.restart(t, nil)
	sec, st = s.waitSecret(t, ns, name, 30*time.Second, "ARI renewal", issued(first))
	t.Logf("ARI renewal after restart: %s -> %s in %s", first, st.Serial, time.Since(begin).Round(time.Millisecond))
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], []string{host})
	s.waitEvent(t, ns, pod.Name, status.EventRenewed)
	if st.RenewalSource != status.RenewalARI || !st.RenewAt.After(time.Now()) {
		t.Errorf("after the ARI renewal: source %q, renew-at %s", st.RenewalSource, st.RenewAt)
	}
}

// backoffs records next-attempt minus last-attempt for each failure count.
func (s *suite) backoffs(t *testing.T, ns, name string, n int) []time.Duration {
	t.Helper()
	seen := map[int]time.Duration{}
	s.waitSecret(t, ns, name, 60*time.Second, fmt.Sprintf("%d failures", n), func(_ *corev1.Secret, st status.External) (bool, string) {
		if st.Failures > 0 && !st.NextAttempt.IsZero() {
			if _, ok := seen[st.Failures]; !ok {
				seen[st.Failures] = st.NextAttempt.Sub(st.LastAttempt)
			}
		}
		return st.Failures >= n, fmt.Sprintf("failures %d, last error %q", st.Failures, st.LastError)
	})
	var out []time.Duration
	for i := 1; i <= n; i++ {
		if d, ok := seen[i]; ok {
			out = append(out, d)
		}
	}
	return out
}

// checkGrowing fails unless the observed backoffs grow (jitter is at most 20%
// of a doubling step, so each one is longer than the one before).
func checkGrowing(t *testing.T, b []time.Duration) {
	t.Helper()
	t.Logf("backoffs after consecutive failures: %v", b)
	if len(b) < 2 {
		t.Fatalf("observed %d backoffs, want at least 2", len(b))
	}
	for i := 1; i < len(b); i++ {
		if b[i] <= b[i-1] {
			t.Errorf("backoff %d (%s) is not longer than backoff %d (%s)", i+1, b[i], i, b[i-1])
		}
	}
}

func (s *suite) testDNSDown(t *testing.T) {
	const ns, host = "acme-dnsdown", "dnsdown.example.test"
	s.namespace(t, ns)
	s.acme.StopDNS()
	dnsUp := false
	t.Cleanup(func() {
		if !dnsUp {
			_ = s.acme.StartDNS(context.Background())
		}
	})
	pod := s.createPod(t, ns, "down-0", host)
	name := inject.ExternalSecretName([]string{host})
	sec, st := s.waitSecret(t, ns, name, 30*time.Second, "a failure", failing(1))
	t.Logf("last error with BIND down: %s", st.LastError)
	if len(sec.Data[corev1.TLSCertKey]) != 0 || st.Issued() {
		t.Fatal("a certificate was stored while DNS is down")
	}
	if sec.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret created at the first attempt has type %s", sec.Type)
	}
	if !st.NextAttempt.After(st.LastAttempt) {
		t.Errorf("next attempt %s not after last attempt %s", st.NextAttempt, st.LastAttempt)
	}
	s.waitEvent(t, ns, pod.Name, status.EventFailed)
	checkGrowing(t, s.backoffs(t, ns, name, 3))
	s.alive(t, ns)

	begin := time.Now()
	if err := s.acme.StartDNS(t.Context()); err != nil {
		t.Fatal(err)
	}
	dnsUp = true
	sec, st = s.waitSecret(t, ns, name, 30*time.Second, "recovery", issued())
	t.Logf("recovered %s after BIND came back", time.Since(begin).Round(time.Millisecond))
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], []string{host})
	s.checkSecret(t, sec, st, []string{host})
	s.waitEvent(t, ns, pod.Name, status.EventIssued)
}

func (s *suite) testWrongTSIG(t *testing.T) {
	const ns, host = "acme-tsig", "tsig.example.test"
	s.namespace(t, ns)
	// Same key name, another secret: BIND refuses the update (BADSIG).
	_, creds := s.acme.RFC2136Config()
	wrong := map[string]string{}
	for k, v := range creds {
		wrong[k] = v
	}
	wrong["RFC2136_TSIG_SECRET"] = "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE="
	s.putCredentials("podtls-dns-wrong", wrong)
	// The controller reads the configuration at start.
	s.restart(t, func() {
		s.writeConfig(func(c *config.Config) { c.DNS.CredentialsSecretRef = &config.SecretRef{Name: "podtls-dns-wrong"} })
	})
	t.Cleanup(func() { s.writeConfig(nil) })

	pod := s.createPod(t, ns, "tsig-0", host)
	name := inject.ExternalSecretName([]string{host})
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "a failure", failing(1))
	t.Logf("last error with a wrong TSIG secret: %s", st.LastError)
	if !containsAny(st.LastError, "NOTAUTH", "BADSIG", "TSIG", "signature") {
		t.Errorf("last error %q does not say the DNS update was refused", st.LastError)
	}
	if strings.Contains(st.LastError, wrong["RFC2136_TSIG_SECRET"]) {
		t.Fatal("the TSIG secret appears in the status")
	}
	s.waitEvent(t, ns, pod.Name, status.EventFailed)
	checkGrowing(t, s.backoffs(t, ns, name, 3))
	s.alive(t, ns)

	// The fix: the config points at the right Secret again; the controller
	// notices the changed file without a restart.
	begin := time.Now()
	s.writeConfig(nil)
	sec, st := s.waitSecret(t, ns, name, 60*time.Second, "recovery after the config fix", issued())
	t.Logf("recovered %s after the config file was fixed (includes the config poll interval)", time.Since(begin).Round(time.Millisecond))
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], []string{host})
	s.checkSecret(t, sec, st, []string{host})
}

func (s *suite) testACMEDown(t *testing.T) {
	const ns, host = "acme-pebbledown", "pebbledown.example.test"
	s.namespace(t, ns)
	s.acme.StopACME()
	acmeUp := false
	t.Cleanup(func() {
		if !acmeUp {
			_ = s.acme.StartACME(context.Background())
		}
	})
	pod := s.createPod(t, ns, "pdown-0", host)
	name := inject.ExternalSecretName([]string{host})
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "a failure", failing(1))
	t.Logf("last error with Pebble down: %s", st.LastError)
	s.waitEvent(t, ns, pod.Name, status.EventFailed)
	checkGrowing(t, s.backoffs(t, ns, name, 3))
	s.alive(t, ns)

	// A new Pebble: new root, and the account is unknown to it.
	begin := time.Now()
	if err := s.acme.StartACME(t.Context()); err != nil {
		t.Fatal(err)
	}
	acmeUp = true
	sec, st := s.waitSecret(t, ns, name, 60*time.Second, "recovery", issued())
	t.Logf("recovered %s after Pebble came back", time.Since(begin).Round(time.Millisecond))
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], []string{host})
	s.checkSecret(t, sec, st, []string{host})
}

// testRestartMidOrder stops the controller while an order waits for DNS
// propagation (the recursive nameserver the config names never answers),
// then starts it again with a working configuration.
func (s *suite) testRestartMidOrder(t *testing.T) {
	const ns, host = "acme-restart", "restart.example.test"
	s.namespace(t, ns)
	hole := newBlackhole(t)
	s.restart(t, func() {
		s.writeConfig(func(c *config.Config) {
			c.DNS.RecursiveNameservers = []string{hole.addr}
			c.DNS.PropagationTimeout = config.Duration{Duration: 3 * time.Second}
		})
	})
	t.Cleanup(func() { s.writeConfig(nil) })

	pod := s.createPod(t, ns, "restart-0", host)
	name := inject.ExternalSecretName([]string{host})
	eventually(t, 30*time.Second, "the order waiting for DNS propagation", func() (bool, string) {
		return hole.saw("_acme-challenge." + host + "."), fmt.Sprintf("queries so far: %v", hole.names())
	})
	sec := s.secret(t, ns, name)
	if sec == nil {
		t.Fatal("no Secret while the order is pending")
	}
	if st, _ := status.Decode(sec.Annotations); st.LastAttempt.IsZero() || st.Issued() {
		t.Fatalf("mid-order status: %+v", st)
	}
	begin := time.Now()
	// An order blocked in lego cannot be cancelled; Run may report that the
	// reconciler outlived the shutdown timeout. What counts is the result.
	err := s.stop()
	t.Logf("controller stopped mid-order in %s (Run: %v)", time.Since(begin).Round(time.Millisecond), err)
	s.writeConfig(nil)
	s.startController()
	sec, st := s.waitSecret(t, ns, name, 60*time.Second, "issuance after the restart", issued())
	t.Logf("issued %s after the restart", time.Since(begin).Round(time.Millisecond))
	// Anything the first run left running would have finished by now.
	time.Sleep(4 * time.Second)
	sec2, st2 := s.waitSecret(t, ns, name, time.Second, "status", issued())
	if st2.Serial != st.Serial || string(sec2.Data[corev1.TLSCertKey]) != string(sec.Data[corev1.TLSCertKey]) {
		t.Fatalf("the certificate changed after the restart's issuance: %s -> %s", st.Serial, st2.Serial)
	}
	if got := s.managedSecrets(t, ns); len(got) != 1 {
		t.Fatalf("%d managed Secrets in %s, want 1", len(got), ns)
	}
	if n := len(s.events(t, ns, pod.Name, status.EventIssued)) + len(s.events(t, ns, pod.Name, status.EventRenewed)); n != 1 {
		t.Errorf("%d issued/renewed events on the pod, want 1", n)
	}
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec2.Data[corev1.TLSCertKey], []string{host})
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(strings.ToLower(s), strings.ToLower(sub)) {
			return true
		}
	}
	return false
}

// blackhole is a DNS server that records the names it is asked for and
// never answers.
type blackhole struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func newBlackhole(t *testing.T) *blackhole {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{addr: pc.LocalAddr().String()}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if name, ok := qname(buf[:n]); ok {
				b.mu.Lock()
				b.seen = append(b.seen, name)
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *blackhole) saw(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range b.seen {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

func (b *blackhole) names() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.seen)
}

// qname reads the first question's name of a DNS message.
func qname(msg []byte) (string, bool) {
	if len(msg) < 12 {
		return "", false
	}
	var labels []string
	for i := 12; i < len(msg); {
		l := int(msg[i])
		if l == 0 {
			return strings.Join(labels, ".") + ".", true
		}
		if l&0xc0 != 0 || i+1+l > len(msg) {
			return "", false
		}
		labels = append(labels, string(msg[i+1:i+1+l]))
		i += 1 + l
	}
	return "", false
}
