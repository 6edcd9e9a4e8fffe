package appcerts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/sidecar/atomicdir"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
)

// fakeStore is the certificate store as the writer sees it.
type fakeStore struct {
	mu       sync.Mutex
	mesh     *tls.Certificate
	roots    []*x509.Certificate
	external *tls.Certificate
	changes  chan struct{}
}

func (f *fakeStore) MeshCertificate() *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mesh
}
func (f *fakeStore) TrustCertificates() []*x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.roots
}
func (f *fakeStore) External(string) *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.external
}
func (f *fakeStore) Changes() <-chan struct{} { return f.changes }

func tlsCert(m Material) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: m.Key, Leaf: m.Chain[0]}
	for _, x := range m.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// recorder counts reloads.
type recorder struct {
	n       int
	err     error
	reports []string // Event reasons sent to the controller
}

func (r *recorder) Action() string                   { return "signal" }
func (r *recorder) Reload(ctx context.Context) error { r.n++; return r.err }

func newTestWriter(t *testing.T, st *fakeStore, formats ...string) (*Writer, *recorder, string) {
	t.Helper()
	dir := t.TempDir()
	rec := &recorder{}
	w, err := New(Config{Dir: dir, Sources: []string{contract.AppSourceMesh, contract.AppSourceExternal}, ExternalDir: "/ext",
		Formats: formats, Store: st, Reload: rec, Report: func(reason, _ string) { rec.reports = append(rec.reports, reason) }})
	if err != nil {
		t.Fatal(err)
	}
	return w, rec, dir
}

func serial(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriterWritesOnChangeAndReloadsOnlyThen(t *testing.T) {
	m := meshMaterial(t)
	st := &fakeStore{changes: make(chan struct{}, 1)}
	w, rec, dir := newTestWriter(t, st, "pem", "jks")
	ctx := context.Background()

	// Nothing issued yet: nothing written, not ready, no error.
	if err := w.Sync(ctx); err != nil || w.Ready() {
		t.Fatalf("Sync = %v, Ready = %v before any certificate", err, w.Ready())
	}
	st.mesh, st.roots = tlsCert(m), m.Roots
	if err := w.Sync(ctx); err != nil || !w.Ready() {
		t.Fatalf("Sync = %v, Ready = %v", err, w.Ready())
	}
	if rec.n != 0 {
		// The app starts only once the mesh files are there (/readyz): their
		// first write, on whichever pass, is nothing to reload.
		t.Fatalf("reloads = %d after the first write of the mesh files, want 0", rec.n)
	}
	first := serial(t, filepath.Join(dir, "mesh"))
	pw, err := os.ReadFile(filepath.Join(dir, "mesh", PasswordFile))
	if err != nil || len(pw) != 32 {
		t.Fatalf("generated password %q, %v", pw, err)
	}
	if info, err := os.Stat(filepath.Join(dir, "mesh", KeyFile)); err != nil || info.Mode().Perm() != SecretMode {
		t.Fatalf("tls.key mode %v, %v", info.Mode(), err)
	}

	// Unchanged material: no write, no reload.
	for range 3 {
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if rec.n != 0 {
		t.Fatalf("reloads = %d without a change", rec.n)
	}
	// The external certificate is issued while the app runs: told.
	st.external = tlsCert(Material{Chain: m.Chain, Key: m.Key})
	if err := w.Sync(ctx); err != nil || rec.n != 1 {
		t.Fatalf("external issued later: Sync = %v, reloads = %d, want 1", err, rec.n)
	}

	// A renewal: rewritten, the same password, one reload.
	m2 := meshMaterial(t)
	st.mesh = tlsCert(m2)
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if serial(t, filepath.Join(dir, "mesh")) == first || rec.n != 2 {
		t.Fatalf("renewal: rewritten %v, reloads %d", serial(t, filepath.Join(dir, "mesh")) != first, rec.n)
	}
	if pw2, _ := os.ReadFile(filepath.Join(dir, "mesh", PasswordFile)); string(pw2) != string(pw) {
		t.Fatal("the generated password changed on renewal")
	}

	// A new writer (the sidecar restarted) finds the files current: no
	// write, no reload, and the same password.
	w2, err := New(Config{Dir: dir, Sources: []string{"mesh"}, Formats: []string{"pem", "jks"}, Store: st, Reload: rec})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Sync(ctx); err != nil || rec.n != 2 {
		t.Fatalf("restart: Sync = %v, reloads = %d", err, rec.n)
	}
}

func TestWriterFirstPassDoesNotReload(t *testing.T) {
	m := meshMaterial(t)
	st := &fakeStore{mesh: tlsCert(m), roots: m.Roots, external: tlsCert(Material{Chain: m.Chain, Key: m.Key}), changes: make(chan struct{}, 1)}
	w, rec, dir := newTestWriter(t, st, "pem")
	if err := w.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec.n != 0 {
		t.Fatalf("reloaded %d times before the app started", rec.n)
	}
	if _, err := os.Stat(filepath.Join(dir, "external", CAFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("external ca.crt: %v; want none (no roots)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "external", CertFile)); err != nil {
		t.Fatal(err)
	}
}

func TestWriterKeepsLastGoodFilesOnFailure(t *testing.T) {
	m := meshMaterial(t)
	st := &fakeStore{mesh: tlsCert(m), roots: m.Roots, changes: make(chan struct{}, 1)}
	w, rec, dir := newTestWriter(t, st, "pem")
	ctx := context.Background()
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mesh := filepath.Join(dir, "mesh")
	good := serial(t, mesh)
	// The symlink swap cannot happen: a directory sits where the new link goes.
	if err := os.MkdirAll(filepath.Join(mesh, "..data.tmp", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	st.mesh = tlsCert(meshMaterial(t))
	err := w.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "write mesh files") {
		t.Fatalf("Sync = %v, want a write error", err)
	}
	if serial(t, mesh) != good || rec.n != 0 {
		t.Fatalf("files changed or reload ran (%d) after a failed write", rec.n)
	}
	if s := w.Statuses()[0]; s.Error == "" || !s.Written {
		t.Fatalf("status %+v, want the error and the previous files", s)
	}
	if err := w.Sync(ctx); err == nil || !slices.Equal(rec.reports, []string{eventsapi.ReasonAppCertsWriteFailed}) {
		t.Fatalf("reports %v after two failed passes; want one Event", rec.reports)
	}
	// Fixed: the next pass writes and reloads.
	if err := os.RemoveAll(filepath.Join(mesh, "..data.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil || serial(t, mesh) == good || rec.n != 1 {
		t.Fatalf("retry: %v, reloads %d", err, rec.n)
	}
	if !slices.Equal(rec.reports, []string{eventsapi.ReasonAppCertsWriteFailed, eventsapi.ReasonAppReloaded}) {
		t.Fatalf("reports %v", rec.reports)
	}
}

func TestWriterPasswordFromSecret(t *testing.T) {
	m := meshMaterial(t)
	st := &fakeStore{mesh: tlsCert(m), roots: m.Roots, changes: make(chan struct{}, 1)}
	dir := t.TempDir()
	pwFile := filepath.Join(t.TempDir(), "password")
	w, err := New(Config{Dir: dir, Sources: []string{"mesh"}, Formats: []string{"pkcs12"}, PasswordFile: pwFile, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.Sync(ctx); err == nil || !strings.Contains(err.Error(), "store password") {
		t.Fatalf("missing password: %v", err)
	}
	if w.Ready() {
		t.Fatal("ready without the files")
	}
	if err := os.WriteFile(pwFile, []byte("from-the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil || !w.Ready() {
		t.Fatalf("Sync = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mesh", PasswordFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a Secret's password was copied into the volume")
	}
	files, _ := os.ReadFile(filepath.Join(dir, "mesh", KeystoreP12))
	checkDecodes(t, m, map[string]atomicdir.File{KeystoreP12: {Name: KeystoreP12, Data: files}}, "from-the-secret")
}
