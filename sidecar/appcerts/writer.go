package appcerts

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/sidecar/atomicdir"
	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
)

// Source is where a source directory's material comes from: the sidecar's
// certificate store, validated before it is served.
type Source interface {
	MeshCertificate() *tls.Certificate
	TrustCertificates() []*x509.Certificate
	External(dir string) *tls.Certificate
	Changes() <-chan struct{}
}

// Config configures a Writer.
type Config struct {
	// Dir is the volume shared with the app containers; each source gets a
	// subdirectory named after it.
	Dir     string
	Sources []string // contract.AppSourceMesh, contract.AppSourceExternal
	// ExternalDir is the store's external certificate directory the
	// external source reads.
	ExternalDir string
	Formats     []string
	PKCS12      string
	// PasswordFile holds the stores' password (a Secret volume); empty:
	// one is generated per pod and written beside the stores.
	PasswordFile string
	Reload       Reloader
	Store        Source
	// Report, if set, sends an Event about the pod (reason, message) to the
	// controller: write failures and reloads (eventsapi reasons).
	Report func(reason, message string)
	// Poll re-reads the password file and retries failed writes; 0: 10s.
	Poll     time.Duration
	Logger   *slog.Logger
	Registry *metrics.Registry
}

// Status is the state of one source directory, served on the admin /certs.
type Status struct {
	Source      string    `json:"source"`
	Dir         string    `json:"dir"`
	Written     bool      `json:"written"`
	Serial      string    `json:"serial,omitempty"`
	WrittenAt   time.Time `json:"written_at,omitzero"`
	Error       string    `json:"error,omitempty"`
	LastReload  string    `json:"last_reload,omitempty"` // result of the last reload action
	Fingerprint string    `json:"-"`
}

// Writer keeps the source directories current.
type Writer struct {
	c          Config
	log        *slog.Logger
	writes     *metrics.CounterVec
	reloads    *metrics.CounterVec
	mu         sync.Mutex
	status     map[string]*Status
	passes     int
	generated  string
	lastReload string
}

// New validates c and prepares the directories.
func New(c Config) (*Writer, error) {
	if c.Dir == "" || len(c.Sources) == 0 || len(c.Formats) == 0 || c.Store == nil {
		return nil, errors.New("appcerts: a directory, a source, a format and a store are required")
	}
	if slices.Contains(c.Sources, contract.AppSourceExternal) && c.ExternalDir == "" {
		return nil, errors.New("appcerts: the external source needs the external certificate's directory")
	}
	if c.Poll == 0 {
		c.Poll = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = metrics.NewRegistry()
	}
	w := &Writer{c: c, log: c.Logger.With("component", "app-certs"), status: map[string]*Status{}}
	w.writes = c.Registry.NewCounterVec("podtls_sidecar_app_cert_writes_total",
		"Writes of app-owned certificate files, by source (mesh, external) and result (success, failure).", "source", "result")
	w.reloads = c.Registry.NewCounterVec("podtls_sidecar_app_reloads_total",
		"Reload actions after app-owned files changed, by action (signal, http) and result (success, failure).", "action", "result")
	for _, s := range c.Sources {
		w.status[s] = &Status{Source: s, Dir: filepath.Join(c.Dir, s)}
		if err := os.MkdirAll(filepath.Join(c.Dir, s), 0o755); err != nil {
			return nil, fmt.Errorf("app certificate directory: %w", err)
		}
	}
	return w, nil
}

// Run writes whenever the store changes, and every Poll (password changes,
// retries), until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.c.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.c.Store.Changes():
		case <-t.C:
		}
		w.Sync(ctx)
	}
}

// Ready reports whether the mesh directory is written (or not asked for):
// the app may start. The external certificate can take minutes to issue
// and does not hold the app back.
func (w *Writer) Ready() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.status[contract.AppSourceMesh]
	return !ok || st.Written
}

// Statuses returns the state of each source directory.
func (w *Writer) Statuses() []Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Status, 0, len(w.status))
	for _, s := range w.c.Sources {
		st := *w.status[s]
		st.LastReload = w.lastReload
		out = append(out, st)
	}
	return out
}

// Sync writes every source whose material changed and, when files the app
// may have read were replaced, runs the reload action. A failure keeps the
// previous files and is retried on the next pass; the error of the last
// failing source is returned.
func (w *Writer) Sync(ctx context.Context) error {
	// The app may run once a pass has found it ready (the mesh files
	// written, /readyz up): only then is a first write worth a reload.
	appMayRun := w.Ready()
	w.mu.Lock()
	appMayRun = appMayRun && w.passes > 0
	w.passes++
	w.mu.Unlock()
	var password string
	var writePassword bool
	var perr error
	if slices.Contains(w.c.Formats, contract.FormatPKCS12) || slices.Contains(w.c.Formats, contract.FormatJKS) {
		password, writePassword, perr = w.password()
	}
	var lastErr error
	replaced := false
	for _, src := range w.c.Sources {
		m, ok := w.material(src)
		if !ok {
			continue // not issued yet: nothing to write, nothing lost
		}
		if perr != nil {
			w.fail(src, perr)
			lastErr = perr
			continue
		}
		o := Options{Formats: w.c.Formats, PKCS12: w.c.PKCS12, Password: password, WritePassword: writePassword}
		dir := filepath.Join(w.c.Dir, src)
		fp := Fingerprint(m, o)
		prev, _ := os.ReadFile(filepath.Join(dir, FingerprintKey))
		if string(bytes.TrimSpace(prev)) == fp {
			w.ok(src, m, fp, false)
			continue
		}
		files, err := Render(m, o)
		if err == nil {
			err = atomicdir.Write(dir, files)
		}
		if err != nil {
			err = fmt.Errorf("write %s files in %s: %w", src, dir, err)
			w.fail(src, err)
			lastErr = err
			continue
		}
		w.ok(src, m, fp, true)
		w.log.Info("app certificate files written", "source", src, "dir", dir, "formats", w.c.Formats,
			"serial", m.Chain[0].SerialNumber.Text(16), "not_after", m.Chain[0].NotAfter.UTC().Format(time.RFC3339))
		// Replaced files may have been read; a first write may be awaited
		// by an app that is already running (an external certificate
		// issued after the pod started).
		if len(prev) > 0 || appMayRun {
			replaced = true
		}
	}
	if replaced && w.c.Reload != nil {
		w.reload(ctx)
	}
	return lastErr
}

func (w *Writer) reload(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := w.c.Reload.Reload(rctx)
	result := "success"
	msg := "ok at " + time.Now().UTC().Format(time.RFC3339)
	if err != nil {
		result = "failure"
		msg = err.Error()
		w.log.Warn("app reload failed", "action", w.c.Reload.Action(), "error", err)
		w.report(eventsapi.ReasonAppReloadFailed, fmt.Sprintf("podtls.io/app-cert-reload %s: %v", w.c.Reload.Action(), err))
	} else {
		w.log.Info("app told to reload its certificates", "action", w.c.Reload.Action())
		w.report(eventsapi.ReasonAppReloaded, fmt.Sprintf("podtls.io/app-cert-reload %s: the app was told that its certificate files changed", w.c.Reload.Action()))
	}
	w.reloads.With(w.c.Reload.Action(), result).Inc()
	w.mu.Lock()
	w.lastReload = w.c.Reload.Action() + ": " + msg
	w.mu.Unlock()
}

func (w *Writer) ok(src string, m Material, fp string, wrote bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status[src]
	if wrote || !st.Written {
		st.WrittenAt = time.Now().UTC()
	}
	st.Written, st.Error, st.Fingerprint = true, "", fp
	st.Serial = m.Chain[0].SerialNumber.Text(16)
	if wrote {
		w.writes.With(src, "success").Inc()
	}
}

func (w *Writer) fail(src string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status[src]
	if st.Error != err.Error() {
		w.log.Warn("app certificate files not written, the previous ones stay", "source", src, "error", err)
	}
	if st.Error == "" { // one Event per failing spell, not per retry
		w.report(eventsapi.ReasonAppCertsWriteFailed, fmt.Sprintf("%s files not written, the previous ones stay: %v", src, err))
	}
	st.Error = err.Error()
	w.writes.With(src, "failure").Inc()
}

func (w *Writer) report(reason, message string) {
	if w.c.Report != nil {
		w.c.Report(reason, message)
	}
}

// material returns a source's current certificate, key and roots.
func (w *Writer) material(src string) (Material, bool) {
	var c *tls.Certificate
	var roots []*x509.Certificate
	switch src {
	case contract.AppSourceMesh:
		c = w.c.Store.MeshCertificate()
		roots = w.c.Store.TrustCertificates()
	case contract.AppSourceExternal:
		c = w.c.Store.External(w.c.ExternalDir)
	}
	if c == nil || c.PrivateKey == nil || len(c.Certificate) == 0 {
		return Material{}, false
	}
	chain := make([]*x509.Certificate, 0, len(c.Certificate))
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return Material{}, false // the store validated it; cannot happen
		}
		chain = append(chain, x)
	}
	return Material{Chain: chain, Key: c.PrivateKey, Roots: roots}, true
}

// password returns the stores' password: the Secret's, re-read on every
// pass, or the pod's generated one, kept in the volume across sidecar
// restarts. writePassword is true for a generated one.
func (w *Writer) password() (pw string, writePassword bool, err error) {
	if w.c.PasswordFile != "" {
		b, err := os.ReadFile(w.c.PasswordFile)
		if err != nil {
			return "", false, fmt.Errorf("store password: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return "", false, fmt.Errorf("store password: %s is empty", w.c.PasswordFile)
		}
		return string(b), false, nil
	}
	if w.generated != "" {
		return w.generated, true, nil
	}
	path := filepath.Join(w.c.Dir, ".password")
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) >= 16:
		w.generated = string(b)
		return w.generated, true, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("generated store password: %w", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("generate store password: %w", err)
	}
	pw = hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(pw), 0o600); err != nil {
		return "", false, fmt.Errorf("keep generated store password: %w", err)
	}
	w.generated = pw
	return pw, true, nil
}
