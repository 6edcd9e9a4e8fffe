// Package certs is the sidecar's file-backed certificate store. It watches the
// mesh certificate directory, the trust bundle and the external certificate
// directories, validates what it reads and swaps it in atomically: new
// handshakes get the new certificate, open connections continue, and a bad
// file never replaces a good certificate.
package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/podtls/podtls/sidecar/metrics"
)

// File names inside a certificate directory (kubernetes.io/tls Secret keys).
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// MeshName is the label of the mesh certificate in metrics and snapshots.
const MeshName = "mesh"

// Options configure a Store.
type Options struct {
	// CertDir holds tls.crt, tls.key and optionally ca.crt (the mesh identity).
	CertDir string
	// TrustBundle is a PEM file of roots; it may be absent.
	TrustBundle string
	// ExternalDirs hold externally issued certificates served by SNI.
	ExternalDirs []string
	// SystemRoots verify external chains that do not verify against their
	// own last certificate; nil means x509.SystemCertPool, loaded on first use.
	SystemRoots *x509.CertPool
	// PollInterval is the backstop content poll; 0 means 10s, negative disables.
	PollInterval time.Duration
	// Debounce groups the events of one update; 0 means 100ms.
	Debounce time.Duration
	Logger   *slog.Logger
	Registry *metrics.Registry
	Now      func() time.Time

	noWatch bool // tests of the poll backstop
}

// Store implements tlsconfig.Source.
type Store struct {
	o        Options
	log      *slog.Logger
	reloads  *metrics.CounterVec
	mu       sync.Mutex // serializes reloads
	attempts map[string][sha256.Size]byte

	mesh      atomic.Pointer[entry]
	trust     atomic.Pointer[trustState]
	externals atomic.Pointer[externalIndex]

	trustFiles map[string][]*x509.Certificate // last good roots per file
	extEntries map[string]*entry              // by dir
	ready      chan struct{}
	readyOnce  sync.Once
}

type entry struct {
	name string
	dir  string
	cert *tls.Certificate
}

type trustState struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
	hash  [sha256.Size]byte
}

type externalIndex struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // "*.example.com" stored as "example.com"
	entries  []*entry
}

// New creates a store; call Reload for the first load and Run to watch.
func New(o Options) (*Store, error) {
	if o.CertDir == "" {
		return nil, errors.New("certs: cert dir is required")
	}
	if o.PollInterval == 0 {
		o.PollInterval = 10 * time.Second
	}
	if o.Debounce == 0 {
		o.Debounce = 100 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = metrics.NewRegistry()
	}
	s := &Store{
		o:          o,
		log:        o.Logger.With("component", "certs"),
		attempts:   map[string][sha256.Size]byte{},
		trustFiles: map[string][]*x509.Certificate{},
		extEntries: map[string]*entry{},
		ready:      make(chan struct{}),
	}
	s.externals.Store(&externalIndex{})
	s.registerMetrics(o.Registry)
	return s, nil
}

func (s *Store) registerMetrics(r *metrics.Registry) {
	s.reloads = r.NewCounterVec("podtls_sidecar_cert_reloads_total",
		"Certificate reload attempts after a content change, by certificate and result (success, failure).", "cert", "result")
	r.NewGaugeFunc("podtls_sidecar_cert_expiry_seconds",
		"Seconds until the served certificate expires (negative once expired).", []string{"cert", "serial"}, func() []metrics.Sample {
			now := s.o.Now()
			var out []metrics.Sample
			for _, e := range s.served() {
				out = append(out, metrics.Sample{Labels: []string{e.name, e.cert.Leaf.SerialNumber.Text(16)}, Value: e.cert.Leaf.NotAfter.Sub(now).Seconds()})
			}
			return out
		})
	r.NewGaugeFunc("podtls_sidecar_cert_not_after_timestamp_seconds",
		"Expiry of the served certificate as a Unix timestamp.", []string{"cert"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, e := range s.served() {
				out = append(out, metrics.Sample{Labels: []string{e.name}, Value: float64(e.cert.Leaf.NotAfter.Unix())})
			}
			return out
		})
	r.NewGaugeFunc("podtls_sidecar_trust_roots", "Number of roots in the trust pool.", nil, func() []metrics.Sample {
		return []metrics.Sample{{Value: float64(len(s.TrustCertificates()))}}
	})
	r.NewGaugeFunc("podtls_sidecar_ready", "1 once a valid mesh certificate is loaded.", nil, func() []metrics.Sample {
		if s.Ready() {
			return []metrics.Sample{{Value: 1}}
		}
		return []metrics.Sample{{Value: 0}}
	})
}

func (s *Store) served() []*entry {
	var out []*entry
	if m := s.mesh.Load(); m != nil {
		out = append(out, m)
	}
	return append(out, s.externals.Load().entries...)
}

// MeshCertificate implements tlsconfig.Source.
func (s *Store) MeshCertificate() *tls.Certificate {
	if e := s.mesh.Load(); e != nil {
		return e.cert
	}
	return nil
}

// ExternalCertificate implements tlsconfig.Source: exact name first, then a
// wildcard covering exactly one label.
func (s *Store) ExternalCertificate(serverName string) *tls.Certificate {
	idx := s.externals.Load()
	if len(idx.entries) == 0 || serverName == "" {
		return nil
	}
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c := idx.exact[name]; c != nil {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return idx.wildcard[name[i+1:]]
	}
	return nil
}

// TrustPool implements tlsconfig.Source.
func (s *Store) TrustPool() *x509.CertPool {
	if t := s.trust.Load(); t != nil {
		return t.pool
	}
	return nil
}

// TrustCertificates returns the current roots.
func (s *Store) TrustCertificates() []*x509.Certificate {
	if t := s.trust.Load(); t != nil {
		return t.certs
	}
	return nil
}

// Ready reports whether a valid mesh certificate is loaded.
func (s *Store) Ready() bool { return s.mesh.Load() != nil }

// ReadyC is closed once a valid mesh certificate is loaded.
func (s *Store) ReadyC() <-chan struct{} { return s.ready }

// Reload reads every file now and swaps in whatever changed and validates.
// It returns the mesh certificate's problem, if the store has no valid mesh
// certificate after the reload, so the caller can refuse to start.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloadTrust()
	meshErr := s.reloadMesh()
	for _, dir := range s.o.ExternalDirs {
		s.reloadExternal(dir)
	}
	if s.mesh.Load() == nil {
		if meshErr == nil {
			meshErr = errors.New("no valid mesh certificate")
		}
		return meshErr
	}
	return nil
}

// ExternalLoaded reports whether dir holds a served external certificate.
func (s *Store) ExternalLoaded(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extEntries[dir] != nil
}

func (s *Store) trustPaths() []string {
	var ps []string
	if s.o.TrustBundle != "" {
		ps = append(ps, s.o.TrustBundle)
	}
	return append(ps, filepath.Join(s.o.CertDir, CAFile))
}

func (s *Store) reloadTrust() {
	changed := false
	for _, p := range s.trustPaths() {
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(s.attempts, "trust:"+p)
			if s.trustFiles[p] != nil {
				s.log.Info("trust bundle file removed", "path", p)
				delete(s.trustFiles, p)
				changed = true
			}
			continue
		case err != nil:
			s.log.Warn("read trust bundle, keeping previous roots", "path", p, "error", err)
			continue
		}
		if !s.contentChanged("trust:"+p, data) {
			continue
		}
		roots, err := ParseCertificates(data)
		if err != nil {
			s.reloads.With("trust", "failure").Inc()
			s.log.Warn("invalid trust bundle, keeping previous roots", "path", p, "error", err)
			continue
		}
		s.trustFiles[p] = roots
		changed = true
	}
	if !changed && s.trust.Load() != nil {
		return
	}
	st := &trustState{pool: x509.NewCertPool()}
	h := sha256.New()
	for _, p := range s.trustPaths() {
		for _, c := range s.trustFiles[p] {
			st.pool.AddCert(c)
			st.certs = append(st.certs, c)
			h.Write(c.Raw)
		}
	}
	copy(st.hash[:], h.Sum(nil))
	if len(st.certs) == 0 {
		st.pool = nil
	}
	if old := s.trust.Load(); old != nil && old.hash == st.hash {
		return
	}
	s.trust.Store(st)
	if changed {
		s.reloads.With("trust", "success").Inc()
		s.log.Info("trust bundle loaded", "roots", len(st.certs))
	}
}

// contentChanged records the hash of data under key and reports whether it
// differs from the previous attempt, so unchanged files are neither
// re-validated nor re-logged on every poll.
func (s *Store) contentChanged(key string, parts ...[]byte) bool {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	if prev, ok := s.attempts[key]; ok && prev == sum {
		return false
	}
	s.attempts[key] = sum
	return true
}

// readPair reads tls.crt and tls.key. If a kubelet-style "..data" swap
// happens between the two reads, it reads again, so a rotation in progress
// is not mistaken for a mismatched pair.
// readPair reads tls.crt and tls.key. If a kubelet-style "..data" swap
// happens between the reads, it reads again, so a rotation in progress is
// not mistaken for a mismatched pair or a missing file.
func readPair(dir string) (certPEM, keyPEM []byte, err error) {
	link := filepath.Join(dir, "..data")
	for range 3 {
		before, _ := os.Readlink(link)
		certPEM, keyPEM, err = readFiles(dir)
		if after, _ := os.Readlink(link); after == before {
			break
		}
	}
	return certPEM, keyPEM, err
}

func readFiles(dir string) (certPEM, keyPEM []byte, err error) {
	certPEM, err = os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", filepath.Join(dir, CertFile), err)
	}
	keyPEM, err = os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", filepath.Join(dir, KeyFile), err)
	}
	return certPEM, keyPEM, nil
}

func (s *Store) reloadMesh() error {
	certPEM, keyPEM, err := readPair(s.o.CertDir)
	if err != nil {
		if s.contentChanged("mesh", []byte(err.Error())) && s.mesh.Load() != nil {
			s.reloads.With(MeshName, "failure").Inc()
			s.log.Warn("mesh certificate unreadable, keeping the current one", "error", err)
		}
		return err
	}
	var trustHash []byte
	if t := s.trust.Load(); t != nil {
		trustHash = t.hash[:]
	}
	// The trust hash is part of the key: a certificate that arrived before
	// its bundle is retried once the bundle shows up.
	if !s.contentChanged("mesh", certPEM, keyPEM, trustHash) {
		return nil
	}
	pair, err := ParseKeyPair(certPEM, keyPEM)
	if err == nil {
		err = ValidateMesh(pair, s.TrustPool(), s.o.Now())
	}
	if err != nil {
		err = fmt.Errorf("mesh certificate in %s: %w", s.o.CertDir, err)
		s.reloads.With(MeshName, "failure").Inc()
		if s.mesh.Load() != nil {
			s.log.Warn("invalid mesh certificate, keeping the current one", "error", err)
		} else {
			s.log.Info("no valid mesh certificate yet", "error", err)
		}
		return err
	}
	if cur := s.mesh.Load(); cur != nil && cur.cert.Leaf.Equal(pair.Leaf) {
		return nil
	}
	s.mesh.Store(&entry{name: MeshName, dir: s.o.CertDir, cert: pair})
	s.reloads.With(MeshName, "success").Inc()
	s.log.Info("mesh certificate loaded", "serial", pair.Leaf.SerialNumber.Text(16),
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339), "uris", uriStrings(pair.Leaf.URIs), "dns_names", pair.Leaf.DNSNames)
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

func (s *Store) systemRoots() *x509.CertPool {
	if s.o.SystemRoots != nil {
		return s.o.SystemRoots
	}
	p, err := x509.SystemCertPool()
	if err != nil {
		s.log.Warn("system roots unavailable", "error", err)
		return nil
	}
	return p
}

func externalName(dir string) string { return "external/" + filepath.Base(dir) }

func (s *Store) reloadExternal(dir string) {
	name := externalName(dir)
	certPEM, keyPEM, err := readPair(dir)
	if err == nil && len(bytes.TrimSpace(certPEM)) == 0 && len(bytes.TrimSpace(keyPEM)) == 0 {
		// The ACME manager creates the Secret with empty tls.crt/tls.key (and
		// its status in annotations) before the first certificate exists.
		err = errors.New("certificate not issued yet (empty tls.crt and tls.key)")
	}
	if err != nil {
		// A Secret volume marked optional stays empty until the ACME
		// manager stores the certificate: not an error worth a warning.
		if s.contentChanged(name, []byte(err.Error())) {
			s.log.Info("external certificate not available", "dir", dir, "error", err)
		}
		return
	}
	if !s.contentChanged(name, certPEM, keyPEM) {
		return
	}
	pair, err := ParseKeyPair(certPEM, keyPEM)
	if err == nil {
		err = ValidateExternal(pair, s.systemRoots, s.o.Now())
	}
	if err != nil {
		s.reloads.With(name, "failure").Inc()
		s.log.Warn("invalid external certificate, keeping the current one", "dir", dir, "error", err)
		return
	}
	s.extEntries[dir] = &entry{name: name, dir: dir, cert: pair}
	s.reloads.With(name, "success").Inc()
	s.log.Info("external certificate loaded", "dir", dir, "serial", pair.Leaf.SerialNumber.Text(16),
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339), "dns_names", pair.Leaf.DNSNames)
	s.rebuildExternalIndex()
}

func (s *Store) rebuildExternalIndex() {
	idx := &externalIndex{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	// Flag order decides between two certificates claiming the same name.
	for _, dir := range s.o.ExternalDirs {
		e := s.extEntries[dir]
		if e == nil {
			continue
		}
		idx.entries = append(idx.entries, e)
		for _, n := range e.cert.Leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			m := idx.exact
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				n, m = rest, idx.wildcard
			}
			if _, taken := m[n]; !taken {
				m[n] = e.cert
			}
		}
	}
	s.externals.Store(idx)
}

// Run watches the directories until ctx ends. Events are debounced; a
// periodic poll catches anything the watcher misses.
func (s *Store) Run(ctx context.Context) error {
	var w *fsnotify.Watcher
	var err error
	if !s.o.noWatch {
		w, err = fsnotify.NewWatcher()
	}
	if err != nil {
		s.log.Warn("file watcher unavailable, relying on polling", "error", err)
		w = nil
	} else if w != nil {
		defer w.Close()
	}
	// A directory that does not exist yet (an optional volume, a trust
	// bundle written later) is watched as soon as it appears.
	var pending []string
	watch := func(dirs []string, level slog.Level) {
		if w == nil {
			return
		}
		var still []string
		for _, d := range dirs {
			if err := w.Add(d); err != nil {
				still = append(still, d)
				s.log.Log(context.Background(), level, "cannot watch directory yet, polling it", "dir", d, "error", err)
			}
		}
		pending = still
	}
	watch(s.watchDirs(), slog.LevelInfo)
	var events chan fsnotify.Event
	var errs chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	var poll <-chan time.Time
	if s.o.PollInterval > 0 {
		t := time.NewTicker(s.o.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var burst time.Time // first event of the current burst
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.log.Debug("file event", "name", ev.Name, "op", ev.Op.String())
			// Any change in a watched directory: kubelet's ..data swap shows
			// up as Create/Rename/Remove of symlinks, an editor or the agent
			// as Write/Rename. The reload itself compares content. A
			// directory that never goes quiet still reloads every 5 debounces.
			now := time.Now()
			if burst.IsZero() {
				burst = now
			}
			if now.Sub(burst) > 5*s.o.Debounce {
				burst = time.Time{}
				debounce.Stop()
				_ = s.Reload()
				continue
			}
			debounce.Reset(s.o.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("file watcher error", "error", err)
			debounce.Reset(s.o.Debounce)
		case <-debounce.C:
			burst = time.Time{}
			s.log.Debug("reloading after file events")
			_ = s.Reload()
		case <-poll:
			if len(pending) > 0 {
				watch(pending, slog.LevelDebug)
			}
			_ = s.Reload()
		}
	}
}

func (s *Store) watchDirs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(d string) {
		d = filepath.Clean(d)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	add(s.o.CertDir)
	if s.o.TrustBundle != "" {
		add(filepath.Dir(s.o.TrustBundle))
	}
	for _, d := range s.o.ExternalDirs {
		add(d)
	}
	return out
}

func uriStrings(us []*url.URL) []string {
	out := make([]string, 0, len(us))
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}
