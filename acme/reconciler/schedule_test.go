package reconciler

import (
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func leafFor(names []string, nb time.Time, life time.Duration) *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: names, NotBefore: nb, NotAfter: nb.Add(life)}
}

func TestDecide(t *testing.T) {
	hosts := []string{"*.shop.example.com", "shop.example.com"}
	const dir = "https://acme.example/directory"
	p := policyOf(issuerconfig.Config{})
	good := leafFor([]string{"shop.example.com", "*.shop.example.com"}, t0, 90*24*time.Hour)
	issued := status.External{Hosts: hosts, Directory: dir, RenewAt: t0.Add(60 * 24 * time.Hour)}
	for _, tc := range []struct {
		name      string
		now       time.Time
		leaf      *x509.Certificate
		st        status.External
		wantNeed  string
		wantOrder bool
		wantNext  time.Time
	}{
		{"no certificate", t0, nil, status.External{}, reasonNoCertificate, true, time.Time{}},
		{"no certificate, backing off", t0, nil, status.External{NextAttempt: t0.Add(time.Minute)}, reasonNoCertificate, false, t0.Add(time.Minute)},
		{"backoff over", t0.Add(time.Minute), nil, status.External{NextAttempt: t0.Add(time.Minute)}, reasonNoCertificate, true, time.Time{}},
		{"valid: next at renew-at", t0.Add(time.Hour), good, issued, "", false, issued.RenewAt},
		{"renewal due", issued.RenewAt, good, issued, reasonDue, true, time.Time{}},
		{"renewal due but backing off", issued.RenewAt, good, withNext(issued, issued.RenewAt.Add(time.Hour)), reasonDue, false, issued.RenewAt.Add(time.Hour)},
		{"no renew-at stored: 2/3 of life", t0.Add(59 * 24 * time.Hour), good, status.External{Directory: dir}, "", false, t0.Add(60 * 24 * time.Hour)},
		{"renew-at after expiry is ignored", t0.Add(61 * 24 * time.Hour), good, status.External{Directory: dir, RenewAt: t0.Add(100 * 24 * time.Hour)}, reasonDue, true, time.Time{}},
		{"forced", t0.Add(time.Hour), good, withForce(issued), reasonForced, true, time.Time{}},
		{"names differ", t0.Add(time.Hour), leafFor([]string{"shop.example.com"}, t0, 90*24*time.Hour), issued, reasonNamesChanged, true, time.Time{}},
		{"other directory (staging -> production)", t0.Add(time.Hour), good, withDir(issued, "https://staging/directory"), reasonDirectory, true, time.Time{}},
		{"expired", t0.Add(91 * 24 * time.Hour), good, issued, reasonExpired, true, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(tc.now, hosts, tc.leaf, tc.st, dir, p)
			if d.Need != tc.wantNeed || d.Order != tc.wantOrder || !d.Next.Equal(tc.wantNext) {
				t.Errorf("decide = %+v, want need %q order %v next %v", d, tc.wantNeed, tc.wantOrder, tc.wantNext)
			}
		})
	}
}

func withNext(e status.External, t time.Time) status.External { e.NextAttempt = t; return e }
func withForce(e status.External) status.External             { e.ForceRenew = "1"; return e }
func withDir(e status.External, d string) status.External     { e.Directory = d; return e }

func TestBackoff(t *testing.T) {
	p := policyOf(issuerconfig.Config{Renewal: issuerconfig.Renewal{MinBackoff: issuerconfig.Duration{Duration: time.Minute}, MaxBackoff: issuerconfig.Duration{Duration: time.Hour}}})
	for _, tc := range []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{0, 0, time.Minute},
		{1, 0, time.Minute},
		{1, 0.99, time.Minute}, // jitter never goes below MinBackoff
		{2, 0, 2 * time.Minute},
		{3, 0, 4 * time.Minute},
		{3, 0.5, 4*time.Minute - 24*time.Second},
		{7, 0, time.Hour}, // 64m capped
		{7, 1, 48 * time.Minute},
		{1000, 0, time.Hour}, // no overflow
	} {
		if got := backoff(tc.n, p, tc.r); got != tc.want {
			t.Errorf("backoff(%d, r=%v) = %v, want %v", tc.n, tc.r, got, tc.want)
		}
	}
}

func TestPolicyDefaults(t *testing.T) {
	p := policyOf(issuerconfig.Config{Renewal: issuerconfig.Renewal{MinBackoff: issuerconfig.Duration{Duration: time.Hour}, MaxBackoff: issuerconfig.Duration{Duration: time.Minute}}})
	if p.MaxBackoff != time.Hour || p.MaxOrdersPerNamePerHour != 3 || p.GracePeriod != 24*time.Hour || p.LifetimeFraction != defaultLifetimeFraction {
		t.Errorf("policy %+v", p)
	}
}

func TestOrderLimiter(t *testing.T) {
	var l orderLimiter
	a := []string{"a.example.com"}
	ab := []string{"a.example.com", "b.example.com"}
	for i := range 3 {
		at := t0.Add(time.Duration(i) * 10 * time.Minute)
		if ok, _ := l.allow(ab, at, 3); !ok {
			t.Fatalf("order %d refused", i)
		}
		l.record(ab, at)
	}
	// a is at the cap through either set; b alone too.
	if ok, retry := l.allow(a, t0.Add(30*time.Minute), 3); ok || !retry.Equal(t0.Add(time.Hour)) {
		t.Errorf("4th order for a: ok=%v retry=%v, want refused until %v", ok, retry, t0.Add(time.Hour))
	}
	if ok, _ := l.allow([]string{"c.example.com"}, t0.Add(30*time.Minute), 3); !ok {
		t.Error("another name is capped too")
	}
	// The window slides.
	if ok, _ := l.allow(a, t0.Add(time.Hour), 3); !ok {
		t.Error("first order left the window but a is still capped")
	}
	// A persisted last-attempt seen again is not counted twice; a new one is.
	var m orderLimiter
	m.record(a, t0.Add(500*time.Millisecond))
	m.seed(a, t0, t0.Add(time.Minute))
	m.seed(a, t0.Add(-2*time.Hour), t0.Add(time.Minute))
	if got := len(m.orders[a[0]]); got != 1 {
		t.Errorf("after seeding the same second: %d orders, want 1", got)
	}
	var fresh orderLimiter // a new leader knows only the annotation
	fresh.seed(a, t0, t0.Add(time.Minute))
	if ok, _ := fresh.allow(a, t0.Add(time.Minute), 1); ok {
		t.Error("seeded last-attempt not counted")
	}
}

func TestInFlight(t *testing.T) {
	var f inFlight
	if !f.tryLock("a") || f.tryLock("a") || !f.tryLock("b") {
		t.Fatal("lock semantics")
	}
	f.unlock("a")
	if !f.tryLock("a") {
		t.Fatal("not released")
	}
}

func TestPodHosts(t *testing.T) {
	hosts := []string{"a.example.com", "b.example.com"}
	name := contract.ExternalSecretName(hosts)
	pod := func(mut func(a map[string]string)) *corev1.Pod {
		a := map[string]string{contract.Status: "{}", contract.ExternalHosts: "B.example.com, a.example.com", contract.ExternalSecret: name}
		mut(a)
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "p", Annotations: a}}
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		ok      bool
		warning bool
	}{
		{"valid", pod(func(map[string]string) {}), true, false},
		{"not injected", pod(func(a map[string]string) { delete(a, contract.Status) }), false, false},
		{"hosts edited after admission", pod(func(a map[string]string) { a[contract.ExternalHosts] = "c.example.com" }), false, true},
		{"secret pointed elsewhere", pod(func(a map[string]string) { a[contract.ExternalSecret] = "podtls-ca" }), false, false},
		{"bad host", pod(func(a map[string]string) { a[contract.ExternalHosts] = "not a host" }), false, true},
		{"hosts removed", pod(func(a map[string]string) { delete(a, contract.ExternalHosts) }), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, why := podHosts(tc.pod, name)
			if ok != tc.ok || (why != "") != tc.warning {
				t.Fatalf("podHosts = %v, %v, %q", got, ok, why)
			}
			if ok && (len(got) != 2 || got[0] != hosts[0] || got[1] != hosts[1]) {
				t.Errorf("hosts %v", got)
			}
		})
	}
	done := pod(func(map[string]string) {})
	done.Status.Phase = corev1.PodSucceeded
	if _, ok, why := podHosts(done, name); ok || why != "" {
		t.Error("finished pod counts as a user")
	}
}

func TestRequeueAt(t *testing.T) {
	if r := requeueAt(t0, time.Time{}, t0.Add(time.Hour), t0.Add(time.Minute)); r.RequeueAfter != time.Minute {
		t.Errorf("got %v", r.RequeueAfter)
	}
	if r := requeueAt(t0, t0.Add(-time.Hour)); r.RequeueAfter != time.Second {
		t.Errorf("past time: got %v", r.RequeueAfter)
	}
	if r := requeueAt(t0); r.RequeueAfter != 0 {
		t.Errorf("nothing: got %v", r.RequeueAfter)
	}
}
