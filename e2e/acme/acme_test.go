package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/poll"
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
	t.Run("wrong TSIG secret: failures, backoff, recovery after the Secret is fixed", s.testWrongTSIG)
	t.Run("controller restarted mid-order: one certificate, one Secret", s.testRestartMidOrder)
	// Last: Pebble forgets every account and certificate when it restarts.
	t.Run("Pebble down: failures, backoff, controller alive", s.testACMEDown)
	t.Run("Pebble back as a new server: account registered again, certificate issued", s.testACMERestarted)
}

func (s *suite) testIssue(t *testing.T) {
	const ns, host = "acme-issue", "www.example.test"
	s.namespace(t, ns)
	begin := time.Now()
	pod := s.createPod(t, ns, "web-0", host)
	name := contract.ExternalSecretName([]string{host})
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

	checkMounted(t, pod, name)

	msgs := s.waitEvent(t, ns, pod.Name, status.EventIssued)
	t.Logf("event %s: %s", status.EventIssued, msgs[0])

	if a := s.account(t); !a.Registered(s.acme.DirectoryURL) {
		t.Errorf("account Secret status %+v", a)
	}
}

// account reads the ACME account Secret's status; it must hold a key.
func (s *suite) account(t *testing.T) status.Account {
	t.Helper()
	acct, err := s.kube.Clientset.CoreV1().Secrets(ctrlNS).Get(t.Context(), "podtls-acme-account", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("account Secret: %v", err)
	}
	if len(acct.Data[status.AccountKeyFile]) == 0 {
		t.Fatal("account Secret holds no key")
	}
	a, err := status.DecodeAccount(acct.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkMounted verifies that the webhook mounted the Secret the manager
// fills (optional, so the pod starts before the first issuance) and pointed
// the sidecar's --external-cert-dir at it.
func checkMounted(t *testing.T, pod *corev1.Pod, secret string) {
	t.Helper()
	var vol *corev1.Volume
	for i := range pod.Spec.Volumes {
		if v := pod.Spec.Volumes[i].Secret; v != nil && v.SecretName == secret {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Secret.Optional == nil || !*vol.Secret.Optional {
		t.Fatalf("pod has no optional volume of Secret %s: %+v", secret, pod.Spec.Volumes)
	}
	dir := path.Join(contract.ExternalDir, secret)
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name != contract.ContainerName {
			continue
		}
		mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vol.Name && m.MountPath == dir })
		flagged := slices.Contains(c.Args, "--external-cert-dir") && slices.Contains(c.Args, dir)
		if !mounted || !flagged {
			t.Fatalf("sidecar: volume mounted at %s %v, --external-cert-dir %s %v (args %v)", dir, mounted, dir, flagged, c.Args)
		}
		return
	}
	t.Fatal("pod has no podtls sidecar")
}

// checkSecret verifies the Secret's type, labels, key pair and status annotations.
func (s *suite) checkSecret(t *testing.T, sec *corev1.Secret, st status.External, hosts []string) {
	t.Helper()
	if sec.Type != corev1.SecretTypeTLS {
		t.Errorf("type %s, want %s", sec.Type, corev1.SecretTypeTLS)
	}
	if sec.Labels[contract.ManagedByLabel] != contract.ManagedByValue || sec.Labels[contract.ComponentLabel] != status.ComponentExternalCert {
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
	sec, st := s.waitSecret(t, ns, contract.ExternalSecretName(hosts), 30*time.Second, "issuance", issued())
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
	ordersBefore := orders(t, "success")
	a := s.createPod(t, ns, "shared-a", "b.example.test,a.example.test")
	b := s.createPod(t, ns, "shared-b", "A.example.test,b.example.test")
	name := contract.ExternalSecretName([]string{"a.example.test", "b.example.test"})
	if a.Annotations["podtls.io/external-secret"] != b.Annotations["podtls.io/external-secret"] {
		t.Fatalf("pods name different Secrets: %s vs %s", a.Annotations["podtls.io/external-secret"], b.Annotations["podtls.io/external-secret"])
	}
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "issuance", issued())
	// The pods that use the host set at issuance get the Event (b may arrive
	// after the order started; the manager does not repeat the Event then).
	s.waitEvent(t, ns, a.Name, status.EventIssued)
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
	if n := orders(t, "success") - ordersBefore; n != 1 {
		t.Errorf("%v successful ACME orders for three pods with the same hosts, want 1", n)
	}
	for _, p := range []string{a.Name, b.Name, c.Name} {
		if n := len(s.events(t, ns, p, status.EventIssued)) + len(s.events(t, ns, p, status.EventRenewed)); n > 1 {
			t.Errorf("pod %s: %d issued/renewed events, want at most 1 (one issuance)", p, n)
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
	name := contract.ExternalSecretName([]string{host})
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "issuance", issued())
	first := st.Serial

	// The Secret volume of the pod, kept in sync the way kubelet does.
	extDir := filepath.Join(t.TempDir(), name)
	s.kubeletSync(t, ns, name, extDir)
	inbound := fmt.Sprintf("127.0.0.1:%d", poll.FreePort(t))
	sc := startSidecar(t, inbound, extDir)
	pid := sc.pid()
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var served string
	poll.Eventually(t, 10*time.Second, "sidecar serves the first certificate", func() (bool, string) {
		served, err = sClientSerial(t.Context(), inbound, host, roots)
		if err != nil {
			return false, err.Error()
		}
		return served == first, "serves " + served
	})

	ordersBefore := orders(t, "success")
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

	poll.Eventually(t, 20*time.Second, "sidecar serves the renewed certificate", func() (bool, string) {
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
	if n := orders(t, "success") - ordersBefore; n != 1 {
		t.Errorf("%v successful ACME orders for one forced renewal, want 1", n)
	}
}

// testARI makes Pebble suggest a renewal window that has already begun. The
// manager asks for ARI again after Pebble's Retry-After (6 h) or after a
// restart; the test restarts the controller instead of waiting hours.
func (s *suite) testARI(t *testing.T) {
	const ns, host = "acme-ari", "ari.example.test"
	s.namespace(t, ns)
	pod := s.createPod(t, ns, "ari-0", host)
	name := contract.ExternalSecretName([]string{host})
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

// backoffs watches n consecutive failures. It returns next-attempt minus
// last-attempt of each (from the annotations, second precision) and the
// time between consecutive failures as seen by polling every 20 ms.
func (s *suite) backoffs(t *testing.T, ns, name string, n int) (planned, between []time.Duration) {
	t.Helper()
	plannedBy := map[int]time.Duration{}
	seenAt := map[int]time.Time{}
	s.waitSecret(t, ns, name, 60*time.Second, fmt.Sprintf("%d failures", n), func(_ *corev1.Secret, st status.External) (bool, string) {
		if st.Failures > 0 && !st.NextAttempt.IsZero() {
			if _, ok := plannedBy[st.Failures]; !ok {
				plannedBy[st.Failures] = st.NextAttempt.Sub(st.LastAttempt)
				seenAt[st.Failures] = time.Now()
			}
		}
		return st.Failures >= n, fmt.Sprintf("failures %d, last error %q", st.Failures, st.LastError)
	})
	for i := 1; i <= n; i++ {
		if d, ok := plannedBy[i]; ok {
			planned = append(planned, d)
		}
		if a, ok := seenAt[i-1]; ok && i > 1 {
			if b, ok := seenAt[i]; ok {
				between = append(between, b.Sub(a))
			}
		}
	}
	return planned, between
}

// checkGrowing fails unless the backoff grows between consecutive failures:
// MinBackoff (2 s), then 4 s less up to 20% jitter. next-attempt has second
// precision, which takes up to 1 s off each, so the observed spacing is
// 1-2 s, then 2.2-4 s. The planned delays in the annotations also include
// the attempt's own duration and are only checked coarsely.
func checkGrowing(t *testing.T, planned, between []time.Duration) {
	t.Helper()
	t.Logf("planned backoffs (annotations, second precision): %v; time between failures: %v", planned, roundAll(between))
	if len(planned) < 3 || len(between) < 2 {
		t.Fatalf("observed %d failures, want 3 in a row", len(planned))
	}
	if planned[len(planned)-1] < planned[0]+time.Second {
		t.Errorf("planned backoff did not grow: %v", planned)
	}
	for i := 1; i < len(between); i++ {
		if between[i] <= between[i-1] {
			t.Errorf("failure %d came %s after the one before, failure %d after %s: no growing backoff", i+2, between[i], i+1, between[i-1])
		}
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
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
	name := contract.ExternalSecretName([]string{host})
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
	planned, between := s.backoffs(t, ns, name, 3)
	checkGrowing(t, planned, between)
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
	const ns, host = "acme-tsig", "keyfault.example.test"
	s.namespace(t, ns)
	// Same key name, another secret, edited into the credentials Secret in
	// place: BIND refuses the update (BADSIG). The issuer reads the Secret
	// again when it changes; no restart.
	_, creds := s.acme.RFC2136Config()
	wrong := map[string]string{}
	for k, v := range creds {
		wrong[k] = v
	}
	wrong["RFC2136_TSIG_SECRET"] = "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE="
	s.putCredentials(credsSecret, wrong)
	fixed := false
	t.Cleanup(func() {
		if !fixed {
			s.putCredentials(credsSecret, creds)
		}
	})

	pod := s.createPod(t, ns, "tsig-0", host)
	name := contract.ExternalSecretName([]string{host})
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "a failure", failing(1))
	t.Logf("last error with a wrong TSIG secret: %s", st.LastError)
	if msg := strings.ReplaceAll(st.LastError, host, "HOST"); !containsAny(msg, "bad authentication", "NOTAUTH", "BADSIG") {
		t.Errorf("last error %q does not say the DNS server refused the update's signature", st.LastError)
	}
	if strings.Contains(st.LastError, wrong["RFC2136_TSIG_SECRET"]) || strings.Contains(st.LastError, creds["RFC2136_TSIG_SECRET"]) {
		t.Fatal("a TSIG secret appears in the status")
	}
	s.waitEvent(t, ns, pod.Name, status.EventFailed)
	planned, between := s.backoffs(t, ns, name, 3)
	checkGrowing(t, planned, between)
	s.alive(t, ns)

	begin := time.Now()
	s.putCredentials(credsSecret, creds)
	fixed = true
	sec, st := s.waitSecret(t, ns, name, 30*time.Second, "recovery after the Secret was fixed", issued())
	t.Logf("recovered %s after the credentials Secret was fixed", time.Since(begin).Round(time.Millisecond))
	roots, err := s.acme.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, roots, sec.Data[corev1.TLSCertKey], []string{host})
	s.checkSecret(t, sec, st, []string{host})
}

// testACMEDown stops Pebble while a pod waits for its certificate.
func (s *suite) testACMEDown(t *testing.T) {
	const ns, host = "acme-pebbledown", "pebbledown.example.test"
	s.namespace(t, ns)
	// A certificate first, so the account exists at this Pebble (the next
	// test needs an account the restarted Pebble does not know).
	s.createPod(t, ns, "pup-0", "pebbleup.example.test")
	s.waitSecret(t, ns, contract.ExternalSecretName([]string{"pebbleup.example.test"}), 30*time.Second, "issuance", issued())
	s.acme.StopACME()
	t.Cleanup(func() { _ = s.acme.StartACME(context.Background()) })
	pod := s.createPod(t, ns, "pdown-0", host)
	name := contract.ExternalSecretName([]string{host})
	_, st := s.waitSecret(t, ns, name, 30*time.Second, "a failure", failing(1))
	t.Logf("last error with Pebble down: %s", st.LastError)
	if !containsAny(st.LastError, "connection refused") {
		t.Errorf("last error %q does not say the ACME server is unreachable", st.LastError)
	}
	s.waitEvent(t, ns, pod.Name, status.EventFailed)
	planned, between := s.backoffs(t, ns, name, 3)
	checkGrowing(t, planned, between)
	s.alive(t, ns)
}

// testACMERestarted: Pebble comes back, but (keeping everything in memory)
// as a new server: new root, and the account is unknown to it. The issuer
// must register again (accountDoesNotExist) and the pending certificate must
// be issued by the new Pebble.
func (s *suite) testACMERestarted(t *testing.T) {
	const ns, host = "acme-pebbledown", "pebbledown.example.test"
	name := contract.ExternalSecretName([]string{host})
	if sec := s.secret(t, ns, name); sec == nil {
		t.Skip("needs the Secret of the Pebble-down test")
	}
	before := s.account(t)
	if before.URI == "" {
		t.Fatal("no ACME account registered before the restart")
	}
	begin := time.Now()
	s.acme.StopACME()
	if err := s.acme.StartACME(t.Context()); err != nil {
		t.Fatal(err)
	}
	sec, st := s.waitSecret(t, ns, name, 30*time.Second, "recovery with the new Pebble", issued())
	t.Logf("recovered %s after Pebble came back", time.Since(begin).Round(time.Millisecond))
	after := s.account(t)
	if after.URI == before.URI || !after.Registered(s.acme.DirectoryURL) {
		t.Errorf("account not registered again: before %+v, after %+v", before, after)
	}
	t.Logf("account %s -> %s (same key)", before.URI, after.URI)
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
		s.writeConfig(func(c *issuerconfig.Config) {
			c.DNS.RecursiveNameservers = []string{hole.addr}
			c.DNS.PropagationTimeout = issuerconfig.Duration{Duration: 3 * time.Second}
		})
	})
	t.Cleanup(func() { s.writeConfig(nil) })

	pod := s.createPod(t, ns, "restart-0", host)
	name := contract.ExternalSecretName([]string{host})
	poll.Eventually(t, 30*time.Second, "the order waiting for DNS propagation", func() (bool, string) {
		return hole.saw("_acme-challenge." + host + "."), fmt.Sprintf("queries so far: %v", hole.names())
	})
	sec := s.secret(t, ns, name)
	if sec == nil {
		t.Fatal("no Secret while the order is pending")
	}
	if st, _ := status.Decode(sec.Annotations); st.LastAttempt.IsZero() || st.Issued() {
		t.Fatalf("mid-order status: %+v", st)
	}
	ordersBefore := orders(t, "success")
	begin := time.Now()
	// An order blocked in lego cannot be cancelled; Run may report that the
	// reconciler outlived the shutdown timeout. What counts is the result.
	err := s.ctl.Stop()
	t.Logf("controller stopped mid-order in %s (Run: %v)", time.Since(begin).Round(time.Millisecond), err)
	s.writeConfig(nil)
	s.startController()
	sec, st := s.waitSecret(t, ns, name, 60*time.Second, "issuance after the restart", issued())
	t.Logf("issued %s after the restart", time.Since(begin).Round(time.Millisecond))
	// The first run's order may still be blocked in lego (its DNS queries to
	// the silent nameserver time out after 10 s): outlast it, then check that
	// it changed nothing.
	time.Sleep(time.Until(begin.Add(12 * time.Second)))
	sec2, st2 := s.waitSecret(t, ns, name, time.Second, "status", issued())
	if st2.Serial != st.Serial || string(sec2.Data[corev1.TLSCertKey]) != string(sec.Data[corev1.TLSCertKey]) {
		t.Fatalf("the certificate changed after the restart's issuance: %s -> %s", st.Serial, st2.Serial)
	}
	if got := s.managedSecrets(t, ns); len(got) != 1 {
		t.Fatalf("%d managed Secrets in %s, want 1", len(got), ns)
	}
	if n := orders(t, "success") - ordersBefore; n != 1 {
		t.Errorf("%v successful ACME orders across the restart, want 1", n)
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
