package reconciler

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/poll"
)

// fixture is a manager on a fake client with a fake clock: for the paths an
// API server cannot be made to take on demand (conflicts, cancellation).
type fixture struct {
	m     *Manager
	c     client.Client
	ca    *testCA
	rec   *record.FakeRecorder
	now   time.Time
	key   types.NamespacedName
	hosts []string
}

func newFixture(t *testing.T, cfg issuerconfig.Config, funcs interceptor.Funcs) *fixture {
	t.Helper()
	f := &fixture{ca: newTestCA(t), rec: record.NewFakeRecorder(100), now: time.Now().Truncate(time.Second),
		hosts: []string{"shop.example.test"}}
	f.key = types.NamespacedName{Namespace: "demo", Name: contract.ExternalSecretName(f.hosts)}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "u1", Annotations: map[string]string{
		contract.Status: "{}", contract.ExternalHosts: "shop.example.test", contract.ExternalSecret: f.key.Name}}}
	f.c = fake.NewClientBuilder().WithObjects(pod).
		WithIndex(&corev1.Pod{}, secretIndex, func(o client.Object) []string { return indexPod(o) }).
		WithInterceptorFuncs(funcs).Build()
	f.m = New(Options{Now: func() time.Time { return f.now }, Rand: func() float64 { return 0 }})
	f.m.client, f.m.api, f.m.recorder, f.m.log = f.c, f.c, f.rec, logr.Discard()
	f.m.config = &configWatcher{state: issuerState{Loaded: true, Config: cfg, Issuer: f.ca}}
	return f
}

func (f *fixture) reconcile(t *testing.T, ctx context.Context) reconcile.Result {
	t.Helper()
	res, err := f.m.Reconcile(ctx, reconcile.Request{NamespacedName: f.key})
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return res
}

func (f *fixture) secret(t *testing.T) (*corev1.Secret, status.External) {
	t.Helper()
	s := &corev1.Secret{}
	if err := f.c.Get(context.Background(), f.key, s); err != nil {
		t.Fatal(err)
	}
	e, err := status.Decode(s.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	return s, e
}

func (f *fixture) forceRenew(t *testing.T) {
	t.Helper()
	s, _ := f.secret(t)
	s.Annotations[status.ForceRenew] = "now"
	if err := f.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// hasCert is true for an Update that writes a certificate.
func hasCert(o client.Object) bool {
	s, ok := o.(*corev1.Secret)
	return ok && len(s.Data[corev1.TLSCertKey]) > 0
}

func TestIssuedCertificateSurvivesAConflict(t *testing.T) {
	var once sync.Once
	f := newFixture(t, issuerconfig.Config{}, interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
		conflict := false
		if hasCert(o) {
			once.Do(func() { conflict = true })
		}
		if conflict {
			return apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, o.GetName(), errors.New("modified"))
		}
		return c.Update(ctx, o, opts...)
	}})
	f.reconcile(t, t.Context())
	if _, e := f.secret(t); e.Issued() || f.ca.count() != 1 {
		t.Fatalf("after the conflict: issued=%v orders=%d", e.Issued(), f.ca.count())
	}
	f.reconcile(t, t.Context())
	if _, e := f.secret(t); !e.Issued() || f.ca.count() != 1 {
		t.Fatalf("kept certificate not written, or ordered again: issued=%v orders=%d", e.Issued(), f.ca.count())
	}
}

// cancellingIssuer cancels the reconcile's context right after issuing.
type cancellingIssuer struct {
	*testCA
	cancel context.CancelFunc
}

func (c cancellingIssuer) Obtain(ctx context.Context, hosts []string, replaces *x509.Certificate) (*acme.Certificate, error) {
	cert, err := c.testCA.Obtain(ctx, hosts, replaces)
	c.cancel()
	return cert, err
}

func TestIssuedCertificateWrittenAfterCancel(t *testing.T) {
	f := newFixture(t, issuerconfig.Config{}, interceptor.Funcs{})
	ctx, cancel := context.WithCancel(t.Context())
	f.m.config.state.Issuer = cancellingIssuer{f.ca, cancel}
	f.reconcile(t, ctx)
	// Written at once, or by the background finish when the reconcile saw
	// the cancellation first.
	poll.Eventually(t, 30*time.Second, "certificate written after the cancellation", func() (bool, string) { _, e := f.secret(t); return e.Issued(), "not yet" })
}

// blockingIssuer ignores cancellation until released, like lego's DNS
// propagation wait.
type blockingIssuer struct {
	*testCA
	release chan struct{}
}

func (b blockingIssuer) Obtain(ctx context.Context, hosts []string, replaces *x509.Certificate) (*acme.Certificate, error) {
	<-b.release
	return b.testCA.Obtain(ctx, hosts, replaces)
}

func TestShutdownDoesNotWaitForTheOrder(t *testing.T) {
	f := newFixture(t, issuerconfig.Config{}, interceptor.Funcs{})
	release := make(chan struct{})
	f.m.config.state.Issuer = blockingIssuer{f.ca, release}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	f.reconcile(t, ctx)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("reconcile returned %s after the cancellation", took)
	}
	if _, e := f.secret(t); e.Issued() || e.LastAttempt.IsZero() || e.Failures != 0 {
		t.Fatalf("before the order finished: %+v", e)
	}
	close(release) // the order completes after all: its certificate is kept
	poll.Eventually(t, 30*time.Second, "certificate of the finished order written", func() (bool, string) { _, e := f.secret(t); return e.Issued(), "not yet" })
}

func TestOrderCapAndBackoff(t *testing.T) {
	f := newFixture(t, issuerconfig.Config{Renewal: issuerconfig.Renewal{MaxOrdersPerNamePerHour: 2,
		MinBackoff: issuerconfig.Duration{Duration: time.Minute}, MaxBackoff: issuerconfig.Duration{Duration: time.Hour}}}, interceptor.Funcs{})
	ctx := t.Context()
	f.reconcile(t, ctx) // order 1
	first := f.now
	f.now = f.now.Add(time.Minute)
	f.forceRenew(t)
	f.reconcile(t, ctx) // order 2
	if n := f.ca.count(); n != 2 {
		t.Fatalf("%d orders, want 2", n)
	}
	f.now = f.now.Add(time.Minute)
	f.forceRenew(t)
	res := f.reconcile(t, ctx) // capped
	if n := f.ca.count(); n != 2 {
		t.Fatalf("cap of 2 per hour: %d orders", n)
	}
	_, e := f.secret(t)
	if !e.NextAttempt.Equal(first.Add(time.Hour)) || res.RequeueAfter != first.Add(time.Hour).Sub(f.now) {
		t.Errorf("capped: next attempt %v requeue %v, want %v", e.NextAttempt, res.RequeueAfter, first.Add(time.Hour))
	}
	// A new leader (empty memory) still honours the persisted next-attempt.
	f.m.limiter = orderLimiter{}
	f.reconcile(t, ctx)
	if n := f.ca.count(); n != 2 {
		t.Fatalf("new leader ordered before next-attempt: %d orders", n)
	}

	// Failures back off 1m, 2m, 4m...; the data stays. (Lift the cap.)
	f.m.config.state.Config.Renewal.MaxOrdersPerNamePerHour = 10
	f.now = first.Add(time.Hour)
	f.ca.setFail(errors.New("urn:ietf:params:acme:error:dns: NXDOMAIN"))
	s, _ := f.secret(t)
	crt := string(s.Data[corev1.TLSCertKey])
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		f.reconcile(t, ctx)
		s, e := f.secret(t)
		if e.Failures != i+1 || !e.NextAttempt.Equal(f.now.Add(want)) || string(s.Data[corev1.TLSCertKey]) != crt || !strings.Contains(e.LastError, "NXDOMAIN") {
			t.Fatalf("failure %d: %+v", i+1, e)
		}
		f.reconcile(t, ctx) // still backing off: no order
		if n := f.ca.count(); n != 3+i {
			t.Fatalf("ordered during backoff: %d orders", n)
		}
		f.now = e.NextAttempt
	}
	if ev := drain(f.rec); !strings.Contains(ev, "Warning "+status.EventFailed) {
		t.Errorf("events %q", ev)
	}
	f.ca.setFail(nil)
	f.reconcile(t, ctx)
	if _, e := f.secret(t); e.Failing() || !e.NextAttempt.IsZero() || e.ForceRenew != "" {
		t.Errorf("after success: %+v", e)
	}
	// Retries after failures do not send ARI's replaces (the replaced
	// certificate may already have a replacement order).
	f.ca.mu.Lock()
	defer f.ca.mu.Unlock()
	if f.ca.replaces[1] == nil || f.ca.replaces[len(f.ca.replaces)-1] != nil {
		t.Errorf("replaces: first renewal %v, retry after failures %v", f.ca.replaces[1] != nil, f.ca.replaces[len(f.ca.replaces)-1] != nil)
	}
}

func TestInterruptedOrderIsNotAFailure(t *testing.T) {
	f := newFixture(t, issuerconfig.Config{}, interceptor.Funcs{})
	ctx, cancel := context.WithCancel(t.Context())
	f.ca.setFail(context.Canceled)
	f.m.config.state.Issuer = cancellingIssuer{f.ca, cancel}
	f.reconcile(t, ctx)
	_, e := f.secret(t)
	if e.Failures != 0 || e.LastAttempt.IsZero() || !e.NextAttempt.After(f.now) {
		t.Errorf("interrupted order: %+v (want no failure, a persisted backoff)", e)
	}
}

func TestNoIssuer(t *testing.T) {
	f := newFixture(t, issuerconfig.Config{}, interceptor.Funcs{})
	f.m.config.state = issuerState{Loaded: true, Err: errors.New("dns.provider: missing")}
	f.reconcile(t, t.Context())
	f.reconcile(t, t.Context())
	ev := drain(f.rec)
	if strings.Count(ev, status.EventNotConfigured) != 1 || !strings.Contains(ev, "dns.provider") {
		t.Errorf("want one %s event naming the config error, got %q", status.EventNotConfigured, ev)
	}
	if err := f.c.Get(t.Context(), f.key, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("Secret created without an issuer: %v", err)
	}
}

func drain(r *record.FakeRecorder) string {
	var b strings.Builder
	for {
		select {
		case e := <-r.Events:
			b.WriteString(e + "\n")
		default:
			return b.String()
		}
	}
}

func TestDisabledNotifiesOnce(t *testing.T) {
	f := newFixture(t, issuerconfig.Config{}, interceptor.Funcs{})
	pod := types.NamespacedName{Namespace: "demo", Name: "web"}
	for range 2 {
		if _, err := f.m.reconcileDisabled(t.Context(), reconcile.Request{NamespacedName: pod}); err != nil {
			t.Fatal(err)
		}
	}
	if ev := drain(f.rec); strings.Count(ev, "Warning "+status.EventNotConfigured) != 1 || !strings.Contains(ev, "--acme-config") {
		t.Errorf("events %q", ev)
	}
}

func TestLeaderOnly(t *testing.T) {
	if !(&resyncer{}).NeedLeaderElection() {
		t.Error("the resyncer runs on every replica")
	}
	// The watcher runs everywhere (live config_ok, issuer ready at failover);
	// it must never write: it has no client.
	if (&configWatcher{}).NeedLeaderElection() {
		t.Error("the config watcher runs on the leader only")
	}
}
