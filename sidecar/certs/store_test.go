package certs

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecar/metrics"
)

const meshID = "spiffe://cluster.local/ns/demo/sa/web"

type fixture struct {
	ca      *testpki.CA
	dir     string
	trust   string
	store   *Store
	reg     *metrics.Registry
	options Options
	logs    *logBuffer // the store's debug log, where tests see it act
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newFixture(t *testing.T, mutate func(*Options)) *fixture {
	t.Helper()
	f := &fixture{ca: testpki.NewCA(t, "mesh root"), reg: metrics.NewRegistry(), logs: &logBuffer{}}
	root := t.TempDir()
	f.dir = filepath.Join(root, "certs")
	trustDir := filepath.Join(root, "trust")
	for _, d := range []string{f.dir, trustDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.trust = filepath.Join(trustDir, "ca.crt")
	testpki.KubeletWrite(t, trustDir, map[string][]byte{"ca.crt": f.ca.RootPEM()})
	f.options = Options{CertDir: f.dir, TrustBundle: f.trust, Registry: f.reg, PollInterval: -1, Debounce: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mutate != nil {
		mutate(&f.options)
	}
	s, err := New(f.options)
	if err != nil {
		t.Fatal(err)
	}
	f.store = s
	return f
}

func (f *fixture) writeLeaf(t *testing.T, l *testpki.Leaf) {
	t.Helper()
	testpki.KubeletWrite(t, f.dir, map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM})
}

// waitWatching waits until Run's file watcher reports events in dir: it
// touches a probe file there until the store logs a file event for it.
func (f *fixture) waitWatching(t *testing.T, dir string) {
	t.Helper()
	probe := filepath.Join(dir, "..probe")
	i := 0
	poll.Eventually(t, 10*time.Second, "the file watcher on "+dir, func() (bool, string) {
		if f.logged(`msg="file event"`, "name="+probe+" ") {
			return true, ""
		}
		i++
		if err := os.WriteFile(probe, []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		return false, "no file event logged for " + probe
	})
}

// logged reports whether one line of the store's log contains every part.
func (f *fixture) logged(parts ...string) bool {
	for line := range strings.Lines(f.logs.String()) {
		found := true
		for _, p := range parts {
			found = found && strings.Contains(line, p)
		}
		if found {
			return true
		}
	}
	return false
}

func (f *fixture) serial() string {
	c := f.store.MeshCertificate()
	if c == nil {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}

func TestLoadValid(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.store.Reload(); err == nil {
		t.Fatal("Reload with no files: want error")
	}
	if f.store.Ready() {
		t.Fatal("ready without certificate")
	}
	l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID, DNSNames: []string{"web.demo.svc"}})
	f.writeLeaf(t, l)
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.serial(), l.Cert.SerialNumber.Text(16); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}
	select {
	case <-f.store.ReadyC():
	default:
		t.Fatal("ReadyC not closed")
	}
	snap := f.store.Snapshot()
	if snap.Mesh == nil || snap.Mesh.URIs[0] != meshID || len(snap.Trust) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
}

func TestBadFilesKeepCurrent(t *testing.T) {
	other := testpki.NewCA(t, "other root")
	good := func(f *fixture) *testpki.Leaf { return f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}) }
	cases := []struct {
		name  string
		files func(f *fixture) map[string][]byte
	}{
		{"key-of-another-cert", func(f *fixture) map[string][]byte {
			a, b := good(f), good(f)
			return map[string][]byte{CertFile: a.ChainPEM, KeyFile: b.KeyPEM}
		}},
		{"expired", func(f *fixture) map[string][]byte {
			l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Minute)})
			return map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM}
		}},
		{"not-yet-valid", func(f *fixture) map[string][]byte {
			l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
			return map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM}
		}},
		{"other-ca", func(*fixture) map[string][]byte {
			l := other.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
			return map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM}
		}},
		{"half-written-cert", func(f *fixture) map[string][]byte {
			l := good(f)
			return map[string][]byte{CertFile: l.ChainPEM[:len(l.ChainPEM)/2], KeyFile: l.KeyPEM}
		}},
		{"half-written-key", func(f *fixture) map[string][]byte {
			l := good(f)
			return map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM[:len(l.KeyPEM)/2]}
		}},
		{"garbage", func(*fixture) map[string][]byte {
			return map[string][]byte{CertFile: []byte("not pem"), KeyFile: []byte{0, 1, 2}}
		}},
		{"empty", func(*fixture) map[string][]byte {
			return map[string][]byte{CertFile: nil, KeyFile: nil}
		}},
		{"key-in-cert-file", func(f *fixture) map[string][]byte {
			l := good(f)
			return map[string][]byte{CertFile: l.KeyPEM, KeyFile: l.KeyPEM}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			l := good(f)
			f.writeLeaf(t, l)
			if err := f.store.Reload(); err != nil {
				t.Fatal(err)
			}
			before := f.serial()
			testpki.KubeletWrite(t, f.dir, tc.files(f))
			if err := f.store.Reload(); err != nil {
				t.Fatalf("Reload must keep the good certificate and report no fatal error: %v", err)
			}
			if got := f.serial(); got != before {
				t.Fatalf("serial changed to %s after bad files", got)
			}
			if n := f.store.reloads.With(MeshName, "failure").Value(); n != 1 {
				t.Fatalf("failure count %d, want 1", n)
			}
			// A second reload of the same bad content is not counted again.
			_ = f.store.Reload()
			if n := f.store.reloads.With(MeshName, "failure").Value(); n != 1 {
				t.Fatalf("failure count after unchanged reload %d, want 1", n)
			}
		})
	}
}

func TestBadFilesAtStartAreErrors(t *testing.T) {
	f := newFixture(t, nil)
	l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	testpki.KubeletWrite(t, f.dir, map[string][]byte{CertFile: l.ChainPEM, KeyFile: []byte("garbage")})
	if err := f.store.Reload(); err == nil || f.store.Ready() {
		t.Fatalf("garbage key at start: err=%v ready=%v", err, f.store.Ready())
	}
}

func TestWatchKubeletSwap(t *testing.T) {
	f := newFixture(t, nil)
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	go f.store.Run(ctx)
	f.waitWatching(t, f.dir)
	for i := range 5 {
		l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
		f.writeLeaf(t, l)
		want := l.Cert.SerialNumber.Text(16)
		poll.Eventually(t, time.Second, fmt.Sprintf("swap %d: serial %s", i, want), func() (bool, string) {
			return f.serial() == want, "serving " + f.serial()
		})
	}
}

func TestPollBackstop(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.noWatch = true; o.PollInterval = 30 * time.Millisecond })
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	go f.store.Run(t.Context())
	l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	f.writeLeaf(t, l)
	want := l.Cert.SerialNumber.Text(16)
	poll.Eventually(t, time.Second, "the poll to pick up "+want, func() (bool, string) {
		return f.serial() == want, "serving " + f.serial()
	})
}

func TestTrustBundleReload(t *testing.T) {
	f := newFixture(t, nil)
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	// A certificate from a new root arrives before the bundle lists that root.
	next := testpki.NewCA(t, "next root")
	l := next.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	f.writeLeaf(t, l)
	_ = f.store.Reload()
	if f.serial() == l.Cert.SerialNumber.Text(16) {
		t.Fatal("certificate from an untrusted root was loaded")
	}
	// ca.crt in the cert dir extends the trust pool; the pending certificate is retried.
	testpki.KubeletWrite(t, f.dir, map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM, CAFile: next.RootPEM()})
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	if f.serial() != l.Cert.SerialNumber.Text(16) {
		t.Fatal("certificate not loaded after its root joined the bundle")
	}
	if n := len(f.store.TrustCertificates()); n != 2 {
		t.Fatalf("trust roots %d, want union of 2", n)
	}
	// A corrupt bundle keeps the previous roots.
	if err := os.WriteFile(filepath.Join(filepath.Dir(f.trust), "..data", "ca.crt"), []byte("-----BEGIN CERTIFICATE-----\nAAA"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = f.store.Reload()
	if n := len(f.store.TrustCertificates()); n != 2 {
		t.Fatalf("corrupt bundle changed roots to %d", n)
	}
	if _, err := f.store.TrustPool().Subjects(), error(nil); err != nil {
		t.Fatal(err)
	}
}

func TestExternalSNI(t *testing.T) {
	pub := testpki.NewCA(t, "public root")
	inter := pub.Intermediate(t, "public intermediate")
	root := t.TempDir()
	shop, wild, lone := filepath.Join(root, "shop"), filepath.Join(root, "wild"), filepath.Join(root, "lone")
	for _, d := range []string{shop, wild, lone} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shopLeaf := inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"shop.example.com"}})
	wildLeaf := inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"*.example.org"}})
	loneLeaf := inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"lone.example.net"}})
	testpki.KubeletWrite(t, shop, map[string][]byte{CertFile: shopLeaf.ChainPEM, KeyFile: shopLeaf.KeyPEM})
	testpki.KubeletWrite(t, wild, map[string][]byte{CertFile: wildLeaf.ChainPEM, KeyFile: wildLeaf.KeyPEM})
	// Leaf only, issuer not in the system roots: an incomplete chain.
	testpki.KubeletWrite(t, lone, map[string][]byte{CertFile: testpki.CertPEM(loneLeaf.Cert), KeyFile: loneLeaf.KeyPEM})

	f := newFixture(t, func(o *Options) { o.ExternalDirs = []string{shop, wild, lone}; o.SystemRoots = x509.NewCertPool() })
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		sni  string
		want *testpki.Leaf
	}{
		{"shop.example.com", shopLeaf},
		{"SHOP.example.com.", shopLeaf},
		{"a.example.org", wildLeaf},
		{"example.org", nil},
		{"a.b.example.org", nil},
		{"lone.example.net", nil},
		{"web.demo.svc", nil},
		{"", nil},
	}
	for _, tc := range cases {
		got := f.store.ExternalCertificate(tc.sni)
		switch {
		case tc.want == nil && got != nil:
			t.Errorf("%q: got %v, want none", tc.sni, got.Leaf.DNSNames)
		case tc.want != nil && (got == nil || !got.Leaf.Equal(tc.want.Cert)):
			t.Errorf("%q: wrong certificate", tc.sni)
		}
	}
	if f.store.ExternalLoaded(lone) {
		t.Error("leaf-only external certificate was accepted")
	}
	// With its issuer among the system roots the lone leaf is complete.
	sys := x509.NewCertPool()
	sys.AddCert(inter.Cert)
	if err := ValidateExternal(mustPair(t, testpki.CertPEM(loneLeaf.Cert), loneLeaf.KeyPEM), func() *x509.CertPool { return sys }, time.Now()); err != nil {
		t.Errorf("leaf issued by a system root: %v", err)
	}
}

func mustPair(t *testing.T, c, k []byte) *tlsCert {
	t.Helper()
	p, err := ParseKeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWatchDirectoryCreatedLater(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PollInterval = 50 * time.Millisecond })
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	// An external dir that appears only after the start.
	late := filepath.Join(t.TempDir(), "late")
	f.store.o.ExternalDirs = []string{late}
	f.store.o.SystemRoots = x509.NewCertPool()
	go f.store.Run(t.Context())
	poll.Eventually(t, 10*time.Second, "Run to try to watch the missing directory", func() (bool, string) {
		return f.logged(`msg="cannot watch directory yet, polling it"`, "dir="+late+" "), "not logged yet"
	})
	if err := os.MkdirAll(late, 0o755); err != nil {
		t.Fatal(err)
	}
	f.waitWatching(t, late) // a poll adds the watch
	inter := testpki.NewCA(t, "public").Intermediate(t, "inter")
	l := inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"late.example.com"}})
	testpki.KubeletWrite(t, late, map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM})
	poll.Eventually(t, time.Second, "late external certificate", func() (bool, string) {
		return f.store.ExternalCertificate("late.example.com") != nil, "not served"
	})
}

func TestReloadDespiteContinuousEvents(t *testing.T) {
	f := newFixture(t, nil) // debounce 20ms
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	go f.store.Run(t.Context())
	f.waitWatching(t, f.dir)
	l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	f.writeLeaf(t, l)
	// Unrelated churn every 5ms, faster than the debounce.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				_ = os.WriteFile(filepath.Join(f.dir, "churn"), []byte{byte(i)}, 0o644)
			}
		}
	}()
	want := l.Cert.SerialNumber.Text(16)
	poll.Eventually(t, time.Second, "reload under continuous events", func() (bool, string) {
		return f.serial() == want, "serving " + f.serial()
	})
}

// The ACME manager creates the Secret with empty files before the first
// issuance: that is "not yet", not a failed reload, and the certificate
// written later is served.
func TestExternalEmptyUntilIssued(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PollInterval = 50 * time.Millisecond })
	f.writeLeaf(t, f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}))
	dir := filepath.Join(t.TempDir(), "podtls-ext-0123456789abcdef")
	testpki.KubeletWrite(t, dir, map[string][]byte{CertFile: nil, KeyFile: nil})
	f.store.o.ExternalDirs = []string{dir}
	f.store.o.SystemRoots = x509.NewCertPool()
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	if f.store.ExternalLoaded(dir) {
		t.Fatal("empty external Secret reported as loaded")
	}
	if n := f.store.reloads.With(externalName(dir), "failure").Value(); n != 0 {
		t.Errorf("empty external Secret counted as %v failed reloads, want 0", n)
	}
	go f.store.Run(t.Context())
	inter := testpki.NewCA(t, "public").Intermediate(t, "inter")
	l := inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"shop.example.com"}})
	testpki.KubeletWrite(t, dir, map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM})
	poll.Eventually(t, 2*time.Second, "issued external certificate", func() (bool, string) {
		return f.store.ExternalCertificate("shop.example.com") != nil, "not served"
	})
}

// TestTrustRootsOnce: a root in both the trust bundle and the cert dir's
// ca.crt (the agent writes the CA's roots there too) is listed once, so
// what is built from the list (app-owned trust stores, /certs) has no
// duplicates.
func TestTrustRootsOnce(t *testing.T) {
	f := newFixture(t, nil)
	l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	testpki.KubeletWrite(t, f.dir, map[string][]byte{CertFile: l.ChainPEM, KeyFile: l.KeyPEM, CAFile: f.ca.RootPEM()})
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.store.TrustCertificates()); n != 1 {
		t.Fatalf("%d roots listed, want the one root once", n)
	}
}
