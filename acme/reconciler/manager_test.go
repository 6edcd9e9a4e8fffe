package reconciler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
)

// testCA is a real in-process CA: the fake issuer signs exactly the names it
// is asked for, with a fresh key per order, like an ACME server would.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte

	mu       sync.Mutex
	fail     error
	orders   [][]string
	replaces []*x509.Certificate
	life     time.Duration
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ACME root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), life: time.Hour}
}

func (c *testCA) setFail(err error) { c.mu.Lock(); c.fail = err; c.mu.Unlock() }
func (c *testCA) count() int        { c.mu.Lock(); defer c.mu.Unlock(); return len(c.orders) }

func (c *testCA) Directory() string { return "https://acme.test/directory" }
func (c *testCA) EnsureAccount(context.Context) (status.Account, error) {
	return status.Account{Directory: c.Directory(), URI: "https://acme.test/acct/1"}, nil
}
func (c *testCA) Obtain(_ context.Context, hosts []string, replaces *x509.Certificate) (*acme.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.orders = append(c.orders, hosts)
	c.replaces = append(c.replaces, replaces)
	if c.fail != nil {
		return nil, c.fail
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	now := time.Now().Truncate(time.Second)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: serial, DNSNames: hosts,
		NotBefore: now, NotAfter: now.Add(c.life), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c.pem...)
	return &acme.Certificate{ChainPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), Leaf: leaf}, nil
}
func (c *testCA) RenewalTime(_ context.Context, leaf *x509.Certificate) (acme.Renewal, error) {
	return acme.Renewal{At: lifetimeRenewal(leaf, policy{LifetimeFraction: defaultLifetimeFraction}), Source: status.RenewalLifetime}, nil
}

// testConfig is the file format of the test parser: just the fields the
// manager reads (the real parser belongs to acme/issuerconfig).
type testConfig struct {
	Allow       []issuerconfig.AllowRule `json:"allow"`
	Grace       string                   `json:"grace"`
	MinBackoff  string                   `json:"minBackoff"`
	MaxPerHour  int                      `json:"maxPerHour"`
	BrokenOnPur bool                     `json:"broken"`
}

func parseTestConfig(b []byte) (issuerconfig.Config, error) {
	var tc testConfig
	if err := json.Unmarshal(b, &tc); err != nil {
		return issuerconfig.Config{}, err
	}
	if tc.BrokenOnPur {
		return issuerconfig.Config{}, errors.New("dns.provider: missing")
	}
	dur := func(s string) issuerconfig.Duration {
		d, _ := time.ParseDuration(s)
		return issuerconfig.Duration{Duration: d}
	}
	return issuerconfig.Config{Allow: tc.Allow, SecretGracePeriod: dur(tc.Grace),
		Renewal: issuerconfig.Renewal{MinBackoff: dur(tc.MinBackoff), MaxBackoff: dur("4s"), MaxOrdersPerNamePerHour: tc.MaxPerHour}}, nil
}

func TestManager(t *testing.T) {
	env := kubetest.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	log.SetLogger(logr.Discard())

	ca := newTestCA(t)
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeCfg := func(tc testConfig) {
		b, _ := json.Marshal(tc)
		if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	allow := []issuerconfig.AllowRule{{Namespaces: []string{"acme-a", "acme-b"}, Hosts: []string{"*.shop.example.test", "shop.example.test", "other.example.test"}}}
	writeCfg(testConfig{Allow: allow, Grace: "3s", MinBackoff: "1s", MaxPerHour: 20})

	syncs := &syncLog{done: map[types.NamespacedName][]int{}}
	rec := &countingRecorder{n: map[string]int{}}
	m := runManager(t, env, Options{
		ConfigFile: cfgFile, ParseConfig: parseTestConfig,
		NewIssuer:          func(context.Context, issuerconfig.Config) (Issuer, error) { return ca, nil },
		ConfigPollInterval: 200 * time.Millisecond, ResyncInterval: 2 * time.Second,
		Recorder: rec, resyncing: syncs.resyncing, reconciling: syncs.reconciling,
	})

	for _, ns := range []string{"acme-a", "acme-b", "acme-denied"} {
		env.CreateNamespace(t, ns, nil)
	}
	hosts := []string{"*.shop.example.test", "shop.example.test"}
	name := contract.ExternalSecretName(hosts)
	newPod := func(ns, pname, hostList string) *corev1.Pod {
		t.Helper()
		h := strings.Split(hostList, ",")
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pname, Annotations: map[string]string{
			contract.Status: `{"version":"test"}`, contract.ExternalHosts: hostList,
			contract.ExternalSecret: contract.ExternalSecretName(h)}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	getSecret := func(ns, n string) (*corev1.Secret, status.External) {
		t.Helper()
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: n}, s); err != nil {
			return nil, status.External{}
		}
		e, _ := status.Decode(s.Annotations)
		return s, e
	}

	var first *corev1.Secret
	t.Run("issued into one Secret shared by two pods", func(t *testing.T) {
		p1 := newPod("acme-a", "web-1", "shop.example.test,*.shop.example.test")
		p2 := newPod("acme-a", "web-2", "*.shop.example.test,shop.example.test")
		poll.Eventually(t, 30*time.Second, "certificate stored", func() (bool, string) {
			s, e := getSecret("acme-a", name)
			first = s
			return s != nil && e.Issued(), "not yet"
		})
		if first.Type != corev1.SecretTypeTLS || !managed(first) {
			t.Errorf("type %s labels %v", first.Type, first.Labels)
		}
		leaf := verifyChain(t, ca, first, "x.shop.example.test")
		_, e := getSecret("acme-a", name)
		if e.Serial != serialHex(leaf) || e.Directory != ca.Directory() || e.RenewalSource != status.RenewalLifetime ||
			e.RenewAt.IsZero() || e.LastSuccess.IsZero() || e.Failing() || strings.Join(e.Hosts, ",") != strings.Join(hosts, ",") {
			t.Errorf("status %+v", e)
		}
		if n := ca.count(); n != 1 {
			t.Errorf("%d orders for two pods, want 1", n)
		}
		for _, p := range []*corev1.Pod{p1, p2} {
			poll.Eventually(t, 30*time.Second, "event "+status.EventIssued+" on "+p.Name, hasEvent(env.Client, p, status.EventIssued))
		}
		// Settled: no write loop on the manager's own updates, nor on a
		// resync (every 2s; one is started here).
		key := types.NamespacedName{Namespace: "acme-a", Name: name}
		s1, _ := getSecret("acme-a", name)
		syncs.resync(t, m, key)
		if s2, _ := getSecret("acme-a", name); s2.ResourceVersion != s1.ResourceVersion {
			t.Errorf("Secret rewritten while nothing changed: %+v", s2.Annotations)
		}

		// A replica created after issuance is told which certificate it
		// uses, once: resyncs (every 2 s) repeat nothing, and the pods
		// present at issuance get no second Event.
		p3 := newPod("acme-a", "web-3", "shop.example.test,*.shop.example.test")
		poll.Eventually(t, 30*time.Second, "event "+status.EventIssued+" on "+p3.Name, hasEvent(env.Client, p3, status.EventIssued))
		syncs.resync(t, m, key) // two resyncs
		syncs.resync(t, m, key)
		for _, p := range []*corev1.Pod{p1, p2, p3} {
			// Recorded Events reach the API server asynchronously: count
			// them where they are recorded too.
			if n := rec.count(p, status.EventIssued); n != 1 {
				t.Errorf("%s: %s recorded %d times, want once", p.Name, status.EventIssued, n)
			}
			evs := podEvents(t, env.Client, p, status.EventIssued)
			if len(evs) != 1 || evs[0].Count > 1 || evs[0].Type != corev1.EventTypeNormal {
				t.Errorf("%s: %d %s Events (%v), want exactly one", p.Name, len(evs), status.EventIssued, evs)
				continue
			}
			msg := evs[0].Message
			if !strings.Contains(msg, "serial "+serialHex(leaf)) || !strings.Contains(msg, name) {
				t.Errorf("%s: Event %q does not name serial %s and Secret %s", p.Name, msg, serialHex(leaf), name)
			}
			if p == p3 && !strings.Contains(msg, "uses certificate") {
				t.Errorf("%s: Event %q, want a 'uses certificate' notice", p.Name, msg)
			}
		}
		if s3, _ := getSecret("acme-a", name); s3.ResourceVersion != s1.ResourceVersion {
			t.Error("Secret written because a pod joined")
		}
		if n := ca.count(); n != 1 {
			t.Errorf("%d orders, want 1", n)
		}
	})

	t.Run("same hosts in another namespace: copied, not ordered again", func(t *testing.T) {
		before := ca.count()
		p := newPod("acme-b", "web", "shop.example.test,*.shop.example.test")
		poll.Eventually(t, 30*time.Second, "certificate copied", func() (bool, string) { _, e := getSecret("acme-b", name); return e.Issued(), "not yet" })
		s, _ := getSecret("acme-b", name)
		if string(s.Data[corev1.TLSCertKey]) != string(first.Data[corev1.TLSCertKey]) {
			t.Error("not the certificate of acme-a")
		}
		if ca.count() != before {
			t.Errorf("ordered again (%d -> %d)", before, ca.count())
		}
		poll.Eventually(t, 30*time.Second, "event "+status.EventIssued+" on "+p.Name, hasEvent(env.Client, p, status.EventIssued))
		if err := env.Client.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("forced renewal", func(t *testing.T) {
		s, e := getSecret("acme-a", name)
		old := e.Serial
		s.Annotations[status.ForceRenew] = "1"
		if err := env.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, "new serial", func() (bool, string) {
			_, e := getSecret("acme-a", name)
			return e.Serial != old && e.ForceRenew == "", "not yet"
		})
		verifyChain(t, ca, mustSecret(getSecret("acme-a", name)), "shop.example.test")
		ca.mu.Lock()
		rep := ca.replaces[len(ca.replaces)-1]
		ca.mu.Unlock()
		if rep == nil || serialHex(rep) != old {
			t.Errorf("ARI replaces = %v, want the old certificate %s", rep, old)
		}
	})

	t.Run("failure: data kept, status, event, backoff, then recovery", func(t *testing.T) {
		s, e := getSecret("acme-a", name)
		oldCrt, oldSerial := string(s.Data[corev1.TLSCertKey]), e.Serial
		ca.setFail(errors.New("dns: update refused: BADKEY"))
		s.Annotations[status.ForceRenew] = "2"
		if err := env.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		var fe status.External
		poll.Eventually(t, 30*time.Second, "failure recorded", func() (bool, string) { _, fe = getSecret("acme-a", name); return fe.Failures >= 1, "not yet" })
		s, _ = getSecret("acme-a", name)
		if string(s.Data[corev1.TLSCertKey]) != oldCrt || fe.Serial != oldSerial {
			t.Error("certificate data changed by a failed order")
		}
		if !strings.Contains(fe.LastError, "BADKEY") || !fe.NextAttempt.After(fe.LastAttempt) || fe.ForceRenew == "" {
			t.Errorf("status after failure %+v", fe)
		}
		pods := &corev1.PodList{}
		_ = env.Client.List(ctx, pods, client.InNamespace("acme-a"))
		poll.Eventually(t, 30*time.Second, "event "+status.EventFailed+" on "+pods.Items[0].Name, hasEvent(env.Client, &pods.Items[0], status.EventFailed))
		// Backoff: 1s, 2s, 4s (max): few attempts in a few seconds.
		// TODO(poll): this is a rate over a wall-clock window, and the
		// retries are timed by controller-runtime's RequeueAfter from a
		// next-attempt stored to the second: it needs an injected clock
		// that also drives the requeue delays (reconcile.go), which the
		// manager does not have.
		time.Sleep(3 * time.Second)
		_, fe = getSecret("acme-a", name)
		if fe.Failures > 3 {
			t.Errorf("%d failures in 3s with backoff from 1s", fe.Failures)
		}
		ca.setFail(nil)
		poll.Eventually(t, 30*time.Second, "recovered", func() (bool, string) {
			_, e := getSecret("acme-a", name)
			return e.Serial != oldSerial && !e.Failing(), "not yet"
		})
		poll.Eventually(t, 30*time.Second, "event "+status.EventRenewed+" on "+pods.Items[0].Name, hasEvent(env.Client, &pods.Items[0], status.EventRenewed))
	})

	t.Run("foreign Secret is left alone", func(t *testing.T) {
		fname := contract.ExternalSecretName([]string{"other.example.test"})
		foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "acme-a", Name: fname},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"x": []byte("mine")}}
		if err := env.Client.Create(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		before := ca.count()
		p := newPod("acme-a", "other", "other.example.test")
		poll.Eventually(t, 30*time.Second, "event "+status.EventIgnored+" on "+p.Name, hasEvent(env.Client, p, status.EventIgnored))
		if evs := podEvents(t, env.Client, p, status.EventFailed); len(evs) != 0 {
			t.Errorf("foreign Secret: %s Events %v, want %s only", status.EventFailed, evs, status.EventIgnored)
		}
		got, _ := getSecret("acme-a", fname)
		if string(got.Data["x"]) != "mine" || len(got.Annotations) != 0 || got.ResourceVersion != foreign.ResourceVersion {
			t.Errorf("foreign Secret touched: %+v", got.ObjectMeta)
		}
		if ca.count() != before {
			t.Error("ordered for a foreign Secret")
		}
	})

	t.Run("annotations edited after admission are ignored", func(t *testing.T) {
		before := ca.count()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "acme-a", Name: "edited", Annotations: map[string]string{
			contract.Status: `{"version":"test"}`, contract.ExternalHosts: "evil.example.test",
			contract.ExternalSecret: name}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, "event "+status.EventIgnored+" on "+p.Name, hasEvent(env.Client, p, status.EventIgnored))
		for _, reason := range []string{status.EventFailed, status.EventIssued} {
			if evs := podEvents(t, env.Client, p, reason); len(evs) != 0 {
				t.Errorf("ignored pod got %s Events %v", reason, evs)
			}
		}
		if ca.count() != before {
			t.Error("ordered for an ignored pod")
		}
	})

	t.Run("denied by policy", func(t *testing.T) {
		before := ca.count()
		p := newPod("acme-denied", "web", "shop.example.test")
		poll.Eventually(t, 30*time.Second, "event "+status.EventDenied+" on "+p.Name, hasEvent(env.Client, p, status.EventDenied))
		_, e := getSecret("acme-denied", contract.ExternalSecretName([]string{"shop.example.test"}))
		if !strings.Contains(e.LastError, "not allowed") || e.Issued() {
			t.Errorf("status %+v", e)
		}
		if ca.count() != before {
			t.Error("ordered although denied")
		}
	})

	t.Run("config change: a bad file keeps the last good one, a good one requeues all", func(t *testing.T) {
		if gauge(t, configOK) != 1 {
			t.Fatal("podtls_acme_config_ok is not 1")
		}
		writeCfg(testConfig{BrokenOnPur: true})
		poll.Eventually(t, 30*time.Second, "config_ok 0", func() (bool, string) { return gauge(t, configOK) == 0, "not yet" })
		if st := m.config.current(); st.Issuer == nil || st.Err == nil {
			t.Fatalf("state after a bad file: issuer %v err %v", st.Issuer, st.Err)
		}
		// The namespace denied so far is allowed now: its pod gets a certificate
		// without any change to the pod or the Secret.
		more := append(slices.Clone(allow), issuerconfig.AllowRule{Namespaces: []string{"acme-denied"}, Hosts: []string{"shop.example.test"}})
		writeCfg(testConfig{Allow: more, Grace: "3s", MinBackoff: "1s", MaxPerHour: 20})
		poll.Eventually(t, 30*time.Second, "issued after the policy change", func() (bool, string) {
			_, e := getSecret("acme-denied", contract.ExternalSecretName([]string{"shop.example.test"}))
			return e.Issued() && e.LastError == "", "not yet"
		})
		if gauge(t, configOK) != 1 {
			t.Error("podtls_acme_config_ok is not 1 again")
		}
	})

	t.Run("unused Secret deleted after the grace period", func(t *testing.T) {
		if err := env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace("acme-a"), client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, "unused-since set", func() (bool, string) { _, e := getSecret("acme-a", name); return !e.UnusedSince.IsZero(), "not yet" })
		poll.Eventually(t, 30*time.Second, "deleted", func() (bool, string) {
			err := env.Client.Get(ctx, types.NamespacedName{Namespace: "acme-a", Name: name}, &corev1.Secret{})
			return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
		})
		fname := contract.ExternalSecretName([]string{"other.example.test"})
		if s, _ := getSecret("acme-a", fname); s == nil {
			t.Error("foreign Secret garbage-collected")
		}
	})
}

// runManager runs the ACME manager in a controller-runtime manager set up
// like podtls-controller's (Secret cache restricted to the manager's labels)
// until the test ends.
func runManager(t *testing.T, env *kubetest.Env, opts Options) *Manager {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 clientgoscheme.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(SecretSelector())},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := opts.Recorder.(*countingRecorder); ok && r.EventRecorder == nil {
		r.EventRecorder = mgr.GetEventRecorderFor("podtls-controller")
	}
	m := New(opts)
	if err := m.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return m
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func mustSecret(s *corev1.Secret, _ status.External) *corev1.Secret { return s }

// verifyChain checks tls.crt/tls.key: a pair, chaining to the test CA, valid for host.
func verifyChain(t *testing.T, ca *testCA, s *corev1.Secret, host string) *x509.Certificate {
	t.Helper()
	if !validPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]) {
		t.Fatal("tls.crt and tls.key do not form a pair")
	}
	leaf := parseLeaf(s.Data[corev1.TLSCertKey])
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	return leaf
}

// syncLog numbers, in one sequence, the starts of the manager's resync
// passes and reconciles (its resyncing and reconciling test seams), and
// records which reconciles have returned.
type syncLog struct {
	mu      sync.Mutex
	seq     int
	resyncs []int
	done    map[types.NamespacedName][]int // start numbers of returned reconciles
}

func (l *syncLog) next() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

func (l *syncLog) resyncing() {
	n := l.next()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resyncs = append(l.resyncs, n)
}

func (l *syncLog) reconciling(key types.NamespacedName) func() {
	n := l.next()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.done[key] = append(l.done[key], n)
	}
}

// resync asks m for a resync pass and waits until one has started and a
// reconcile of key that started after it has returned: the manager has
// processed the pass for key.
func (l *syncLog) resync(t *testing.T, m *Manager, key types.NamespacedName) {
	t.Helper()
	mark := l.next()
	m.requeueAll()
	pass := 0
	poll.Eventually(t, 30*time.Second, "a resync pass", func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, r := range l.resyncs {
			if r > mark {
				pass = r
				return true, ""
			}
		}
		return false, "none started"
	})
	poll.Eventually(t, 30*time.Second, "a reconcile of "+key.String()+" after the resync pass", func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.done[key] {
			if s > pass {
				return true, ""
			}
		}
		return false, "none returned"
	})
}

// countingRecorder counts the Events recorded on each pod by reason, when
// they are recorded (the API server shows them later).
type countingRecorder struct {
	record.EventRecorder
	mu sync.Mutex
	n  map[string]int
}

func (r *countingRecorder) Event(o runtime.Object, typ, reason, msg string) {
	if p, ok := o.(*corev1.Pod); ok {
		r.mu.Lock()
		r.n[string(p.UID)+"/"+reason]++
		r.mu.Unlock()
	}
	r.EventRecorder.Event(o, typ, reason, msg)
}

func (r *countingRecorder) count(p *corev1.Pod, reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[string(p.UID)+"/"+reason]
}

// hasEvent is a poll.Eventually condition: pod has an Event of reason.
func hasEvent(c client.Client, pod *corev1.Pod, reason string) func() (bool, string) {
	return func() (bool, string) {
		evs := &corev1.EventList{}
		if err := c.List(context.Background(), evs, client.InNamespace(pod.Namespace)); err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == pod.Name && e.Reason == reason {
				return true, ""
			}
		}
		return false, "no such Event yet"
	}
}

// podEvents lists the Events of reason on pod.
func podEvents(t *testing.T, c client.Client, pod *corev1.Pod, reason string) []corev1.Event {
	t.Helper()
	evs := &corev1.EventList{}
	if err := c.List(context.Background(), evs, client.InNamespace(pod.Namespace)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == pod.Name && e.InvolvedObject.UID == pod.UID && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}
