package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecar/certs"
)

const id = "spiffe://cluster.local/ns/demo/sa/web"

func TestBackoff(t *testing.T) {
	cases := []struct {
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{1, 1, time.Second},
		{2, 0, time.Second},
		{3, 0.5, 3 * time.Second},
		{6, 1, 32 * time.Second},
		{7, 1, time.Minute},
		{50, 0, 30 * time.Second},
		{1000, 1, time.Minute},
	}
	for _, tc := range cases {
		if got := Backoff(tc.attempt, time.Minute, tc.jitter); got != tc.want {
			t.Errorf("Backoff(%d, 1m, %v) = %s, want %s", tc.attempt, tc.jitter, got, tc.want)
		}
	}
}

type env struct {
	ca    *testpki.CA
	srv   *testpki.SignServer
	dir   string
	token string
	store *certs.Store
	agent *Agent
}

func newEnv(t *testing.T, ttl time.Duration, trustServer bool) *env {
	t.Helper()
	e := &env{ca: testpki.NewCA(t, "mesh root"), dir: t.TempDir()}
	e.srv = testpki.NewSignServer(t, e.ca, id)
	e.token = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(e.token, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	e.store, err = certs.New(certs.Options{CertDir: e.dir, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var extra []*x509.Certificate
	if trustServer {
		extra, err = ParseEnvRoots(string(e.srv.RootPEM()))
		if err != nil {
			t.Fatal(err)
		}
	}
	e.agent, err = New(Config{CAURL: e.srv.URL, TokenFile: e.token, DNSNames: []string{"web.demo.svc"}, TTL: ttl,
		CertDir: e.dir, Store: e.store, ExtraRoots: extra, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) serial() string {
	if c := e.store.MeshCertificate(); c != nil {
		return c.Leaf.SerialNumber.Text(16)
	}
	return ""
}

func TestIssueWriteAndRenew(t *testing.T) {
	e := newEnv(t, 3*time.Second, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { e.agent.Run(ctx); close(done) }()
	select {
	case <-e.store.ReadyC():
	case <-time.After(5 * time.Second):
		t.Fatal("no certificate from the agent")
	}
	leaf := e.store.MeshCertificate().Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id || leaf.DNSNames[0] != "web.demo.svc" {
		t.Fatalf("issued leaf %v %v", leaf.URIs, leaf.DNSNames)
	}
	st, err := os.Stat(filepath.Join(e.dir, certs.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tls.key mode %v, err %v", st.Mode(), err)
	}
	for _, f := range []string{certs.KeyFile, certs.CertFile, certs.CAFile} {
		if target, err := os.Readlink(filepath.Join(e.dir, f)); err != nil || target != filepath.Join("..data", f) {
			t.Fatalf("%s: link %q, %v", f, target, err)
		}
	}
	// The token is re-read for every request.
	if err := os.WriteFile(e.token, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	first := e.serial()
	poll.Eventually(t, 5*time.Second, "a renewal of the 3s certificate", func() (bool, string) {
		return e.serial() != first, "still serial " + first
	})
	toks := e.srv.Tokens()
	if toks[0] != "token-1" || toks[len(toks)-1] != "token-2" {
		t.Fatalf("tokens %v: want the file re-read on each call", toks)
	}
	entries, _ := os.ReadDir(e.dir)
	var staged int
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "..podtls_") {
			staged++
		}
	}
	if staged != 1 {
		t.Fatalf("%d staging dirs left, want the current one only", staged)
	}
	cancel()
	<-done
}

func TestErrorsKeepCurrentCertificate(t *testing.T) {
	e := newEnv(t, time.Hour, true)
	ctx := context.Background()
	if err := e.agent.RenewOnce(ctx); err != nil {
		t.Fatal(err)
	}
	good := e.serial()
	cases := []struct {
		name      string
		setup     func()
		permanent bool
		retry     time.Duration
	}{
		{"forbidden", func() { e.srv.Fail(http.StatusForbidden, "") }, true, 0},
		{"bad-request", func() { e.srv.Fail(http.StatusBadRequest, "") }, true, 0},
		{"rate-limited", func() { e.srv.Fail(http.StatusTooManyRequests, "7") }, false, 7 * time.Second},
		{"unavailable", func() { e.srv.Fail(http.StatusServiceUnavailable, "") }, false, 0},
		{"wrong-key", func() { e.srv.Fail(0, ""); e.srv.SignWrongKey(true) }, false, 0},
		{"empty-token", func() {
			e.srv.SignWrongKey(false)
			_ = os.WriteFile(e.token, []byte("  \n"), 0o600)
		}, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			err := e.agent.RenewOnce(ctx)
			if err == nil {
				t.Fatal("want an error")
			}
			var se *StatusError
			if got := errors.As(err, &se) && se.Permanent(); got != tc.permanent {
				t.Fatalf("permanent=%v, want %v (%v)", got, tc.permanent, err)
			}
			if tc.retry > 0 && se.RetryAfter != tc.retry {
				t.Fatalf("Retry-After %s, want %s", se.RetryAfter, tc.retry)
			}
			if e.serial() != good {
				t.Fatal("the served certificate changed after a failed request")
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		e.srv.Close()
		_ = os.WriteFile(e.token, []byte("t"), 0o600)
		if err := e.agent.RenewOnce(ctx); err == nil {
			t.Fatal("want an error")
		}
		if e.serial() != good {
			t.Fatal("the served certificate changed")
		}
	})
}

func TestCAIsVerified(t *testing.T) {
	e := newEnv(t, time.Hour, false) // the CA's HTTPS certificate is not trusted
	err := e.agent.RenewOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want a TLS verification error, got %v", err)
	}
	if e.store.Ready() {
		t.Fatal("certificate installed from an unverified CA")
	}
}

func FuzzParseEnvRoots(f *testing.F) {
	f.Add(string(testpki.NewCA(f, "r").RootPEM()))
	f.Add("")
	f.Add("-----BEGIN CERTIFICATE-----\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseEnvRoots(s)
	})
}

func TestRunRetrySchedule(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		minCalls int
		maxCalls int
	}{
		// Transient: backoff 0.5s, 1s capped at MaxBackoff (100ms here) => many calls.
		{"transient-retries-fast", http.StatusServiceUnavailable, 5, 40},
		// Permanent: one call, then PermanentRetry (1h here).
		{"permanent-waits", http.StatusForbidden, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, time.Hour, true)
			e.agent.c.PermanentRetry = time.Hour
			e.srv.Fail(tc.status, "")
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			e.agent.Run(ctx)
			if n := len(e.srv.Tokens()); n < tc.minCalls || n > tc.maxCalls {
				t.Fatalf("%d calls in 1s, want %d..%d", n, tc.minCalls, tc.maxCalls)
			}
			if e.store.Ready() {
				t.Fatal("ready without a certificate")
			}
		})
	}
}

// TestRenewNow: a forced renewal replaces the certificate at once, and
// forced renewals racing with each other never leave a broken cert dir.
func TestRenewNow(t *testing.T) {
	e := newEnv(t, time.Hour, true)
	ctx := context.Background()
	if err := e.agent.RenewOnce(ctx); err != nil {
		t.Fatal(err)
	}
	first := e.serial()
	leaf, err := e.agent.RenewNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := leaf.SerialNumber.Text(16); got == first || got != e.serial() {
		t.Fatalf("RenewNow returned serial %s; before %s, served %s", got, first, e.serial())
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := e.agent.RenewNow(ctx)
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent RenewNow: %v", err)
		}
	}
	if err := e.store.Reload(); err != nil {
		t.Fatalf("cert dir after concurrent renewals: %v", err)
	}
	e.srv.Fail(http.StatusServiceUnavailable, "")
	before := e.serial()
	if _, err := e.agent.RenewNow(ctx); err == nil {
		t.Fatal("RenewNow succeeded while the CA fails")
	}
	if e.serial() != before {
		t.Fatal("a failed forced renewal changed the served certificate")
	}
}
