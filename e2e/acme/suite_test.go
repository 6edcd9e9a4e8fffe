package acme_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testctl"
)

// challengeDelay holds Pebble's challenge responses (see
// acmetest.Options.ChallengeDelay). Pebble validates in about a millisecond,
// so lego's first look at the authorization usually finds it valid even
// without the delay (measured: 270 ms per issuance either way); when it looks
// too early it sleeps 5 s. The delay makes the timings deterministic.
const challengeDelay = 100 * time.Millisecond

const (
	ctrlNS      = "podtls-system"
	credsSecret = "podtls-dns-credentials"
)

// suite is one API server, one Pebble + BIND, and podtls-controller, which
// tests may stop and start again.
type suite struct {
	t       *testing.T
	kube    *kubetest.Env
	acme    *acmetest.Env
	cfgPath string
	opts    options.Options
	ctl     *testctl.Controller // the running (or last) controller
}

func newSuite(t *testing.T) *suite {
	t.Helper()
	if testing.Short() {
		t.Skip("acme e2e: starts a kube-apiserver, BIND9 and Pebble; skipped in -short mode")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv(acmetest.RequireEnv) != "" {
			t.Fatalf("openssl not found: %v", err)
		}
		t.Skip("openssl not found")
	}
	begin := time.Now()
	s := &suite{t: t, kube: kubetest.Start(t), acme: acmetest.StartT(t, acmetest.Options{ChallengeDelay: challengeDelay})}
	s.kube.CreateNamespace(t, ctrlNS, nil)
	_, creds := s.acme.RFC2136Config()
	s.putCredentials(credsSecret, creds)
	testctl.CreateWebhookConfiguration(t, s.kube.Clientset)
	s.cfgPath = filepath.Join(t.TempDir(), "config.yaml")
	s.writeConfig(nil)

	s.opts = testctl.Options(t, ctrlNS)
	s.opts.LeaderElect = true
	setACMEOptions(&s.opts, s.cfgPath)
	s.startController()
	t.Logf("suite ready in %s (API server, BIND, Pebble, controller)", time.Since(begin).Round(time.Millisecond))
	return s
}

// baseConfig is the issuer configuration of the tests: Pebble, lego's
// rfc2136 provider against BIND, fast polling and short backoffs.
func (s *suite) baseConfig() issuerconfig.Config {
	cfg, _ := s.acme.RFC2136Config()
	return issuerconfig.Config{
		DirectoryURL:  s.acme.DirectoryURL,
		Email:         "ops@podtls.test",
		Profile:       "default",
		KeyType:       "ecdsa-p256",
		CABundle:      string(s.acme.ACMECABundle()),
		AccountSecret: "podtls-acme-account",
		DNS: issuerconfig.DNS{
			Provider:             "rfc2136",
			CredentialsSecretRef: &issuerconfig.SecretRef{Name: credsSecret},
			Config:               cfg,
			RecursiveNameservers: []string{s.acme.DNSAddr},
			AuthoritativeNSCheck: ptr(false),
			PropagationTimeout:   issuerconfig.Duration{Duration: 10 * time.Second},
			PollingInterval:      issuerconfig.Duration{Duration: 50 * time.Millisecond},
		},
		Renewal: issuerconfig.Renewal{
			ARI:              ptr(true),
			LifetimeFraction: 0.6667,
			// 2 s, not 1 s: next-attempt is stored with second precision,
			// which shortens each backoff by up to 1 s.
			MinBackoff:              issuerconfig.Duration{Duration: 2 * time.Second},
			MaxBackoff:              issuerconfig.Duration{Duration: 8 * time.Second},
			MaxOrdersPerNamePerHour: 100,
		},
		SecretGracePeriod: issuerconfig.Duration{Duration: time.Hour},
	}
}

// writeConfig writes the config file (JSON is YAML) the controller polls,
// after edit changed the base configuration.
func (s *suite) writeConfig(edit func(*issuerconfig.Config)) {
	s.t.Helper()
	c := s.baseConfig()
	if edit != nil {
		edit(&c)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := issuerconfig.Parse(b, providers.Catalog); err != nil {
		s.t.Fatalf("test config does not parse: %v\n%s", err, b)
	}
	// Replace atomically, as kubelet does: the controller never reads half a file.
	tmp := s.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.cfgPath); err != nil {
		s.t.Fatal(err)
	}
}

// putCredentials creates or replaces a DNS credentials Secret in the controller namespace.
func (s *suite) putCredentials(name string, data map[string]string) {
	s.t.Helper()
	ctx := s.t.Context()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ctrlNS}, StringData: data}
	_, err := s.kube.Clientset.CoreV1().Secrets(ctrlNS).Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = s.kube.Clientset.CoreV1().Secrets(ctrlNS).Update(ctx, sec, metav1.UpdateOptions{})
	}
	if err != nil {
		s.t.Fatal(err)
	}
}

// startController runs controller.Run in-process and waits for /readyz;
// it is stopped at the end of the suite's test at the latest.
func (s *suite) startController() {
	s.t.Helper()
	s.ctl = testctl.Start(s.t, s.kube.Config, s.opts)
}

// restart stops the controller (failing t if Run returns an error), lets
// between run (e.g. rewrite the config), and starts it again.
func (s *suite) restart(t *testing.T, between func()) {
	t.Helper()
	if err := s.ctl.Stop(); err != nil {
		t.Errorf("controller.Run: %v", err)
	}
	if between != nil {
		between()
	}
	s.startController()
}

// alive fails t unless the controller still runs, answers /healthz and
// admits (injects) a new pod: "other functions OK" during ACME faults.
func (s *suite) alive(t *testing.T, ns string) {
	t.Helper()
	if exited, err := s.ctl.Exited(); exited {
		t.Fatalf("controller exited: %v", err)
	}
	if ok, why := s.ctl.Ready(); !ok {
		t.Fatalf("controller not ready: %s", why)
	}
	p, err := s.kube.Clientset.CoreV1().Pods(ns).Create(t.Context(), newPod(ns, fmt.Sprintf("mesh-%d", time.Now().UnixNano()), ""), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("mesh pod during the fault: %v", err)
	}
	if p.Annotations[contract.Status] == "" {
		t.Fatal("mesh pod created during the fault was not injected")
	}
}

// namespace creates a namespace with injection enabled.
func (s *suite) namespace(t *testing.T, name string) {
	t.Helper()
	s.kube.CreateNamespace(t, name, map[string]string{contract.Inject: contract.NamespaceEnabled})
}

// createPod creates an injected pod asking for hosts and returns it as admitted.
func (s *suite) createPod(t *testing.T, ns, name, hosts string) *corev1.Pod {
	t.Helper()
	p, err := s.kube.Clientset.CoreV1().Pods(ns).Create(t.Context(), newPod(ns, name, hosts), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	want := contract.ExternalSecretName(strings.Split(hosts, ","))
	if got := p.Annotations[contract.ExternalSecret]; got != want {
		t.Fatalf("pod %s/%s: %s = %q, want %q (annotations %v)", ns, name, contract.ExternalSecret, got, want, p.Annotations)
	}
	return p
}

func newPod(ns, name, hosts string) *corev1.Pod {
	ann := map[string]string{contract.Inbound: "8443:8080"}
	if hosts != "" {
		ann[contract.ExternalHosts] = hosts
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "localhost/app:1"}}},
	}
}

// secret returns the Secret or nil if it does not exist.
func (s *suite) secret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	sec, err := s.kube.Clientset.CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// waitSecret polls (every 20 ms) until cond accepts the Secret and its
// decoded status, and returns both.
func (s *suite) waitSecret(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*corev1.Secret, status.External) (bool, string)) (*corev1.Secret, status.External) {
	t.Helper()
	var sec *corev1.Secret
	var st status.External
	deadline := time.Now().Add(timeout)
	last := "secret not created"
	for {
		sec = s.secret(t, ns, name)
		if sec != nil {
			var err error
			st, err = status.Decode(sec.Annotations)
			if err != nil {
				t.Fatalf("secret %s/%s: %v", ns, name, err)
			}
			ok, why := cond(sec, st)
			if ok {
				return sec, st
			}
			last = why
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s of %s/%s: %s\nannotations: %v", timeout, what, ns, name, last, annotationsOf(sec))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func annotationsOf(s *corev1.Secret) map[string]string {
	if s == nil {
		return nil
	}
	return s.Annotations
}

// issued accepts a Secret holding a certificate (other than the serials in notSerial).
func issued(notSerial ...string) func(*corev1.Secret, status.External) (bool, string) {
	return func(sec *corev1.Secret, st status.External) (bool, string) {
		if len(sec.Data[corev1.TLSCertKey]) == 0 || !st.Issued() {
			return false, fmt.Sprintf("not issued (failures %d, last error %q)", st.Failures, st.LastError)
		}
		for _, n := range notSerial {
			if st.Serial == n {
				return false, "still serial " + n
			}
		}
		return true, ""
	}
}

// failing accepts a Secret whose status reports at least n failures.
func failing(n int) func(*corev1.Secret, status.External) (bool, string) {
	return func(_ *corev1.Secret, st status.External) (bool, string) {
		if st.Failures >= n && st.LastError != "" && !st.NextAttempt.IsZero() {
			return true, ""
		}
		return false, fmt.Sprintf("failures %d, last error %q, next attempt %v", st.Failures, st.LastError, st.NextAttempt)
	}
}

// events returns the messages of Events with reason on the named pod.
func (s *suite) events(t *testing.T, ns, pod, reason string) []string {
	t.Helper()
	evs, err := s.kube.Clientset.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "Pod" && e.InvolvedObject.Name == pod && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

func (s *suite) waitEvent(t *testing.T, ns, pod, reason string) []string {
	t.Helper()
	var msgs []string
	poll.Eventually(t, 30*time.Second, reason+" event on pod "+ns+"/"+pod, func() (bool, string) {
		msgs = s.events(t, ns, pod, reason)
		return len(msgs) > 0, "none yet"
	})
	return msgs
}

// managedSecrets lists the external-certificate Secrets of a namespace.
func (s *suite) managedSecrets(t *testing.T, ns string) []corev1.Secret {
	t.Helper()
	l, err := s.kube.Clientset.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{
		LabelSelector: contract.ComponentLabel + "=" + status.ComponentExternalCert})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func ptr[T any](v T) *T { return &v }

// orders reads podtls_acme_orders_total{result} from the controller's
// registry (the controller runs in this process).
func orders(t *testing.T, result string) float64 {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "podtls_acme_orders_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
