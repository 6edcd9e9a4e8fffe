// Package certs is the sidecar's file-backed certificate store. It watches the
// mesh certificate directory, the trust bundle and the external certificate
// directories, validates what it reads and swaps it in atomically: new
// handshakes get the new certificate, open connections continue, and a bad
// file never replaces a good certificate.
package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	// CredentialBundle, instead of CertDir, is one PEM file holding the key
	// and the chain (the kubelet's podCertificate credentialBundlePath).
	CredentialBundle string
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
	changes    chan struct{} // one pending signal: something served changed
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
	if (o.CertDir == "") == (o.CredentialBundle == "") {
		return nil, errors.New("certs: exactly one of a cert dir and a credential bundle is required")
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
		changes:    make(chan struct{}, 1),
	}
	s.externals.Store(&externalIndex{})
	s.registerMetrics(o.Registry)
	return s, nil
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

// Changes receives a value after the mesh certificate, the roots or an
// external certificate changed; several changes may arrive as one. Readers
// of files derived from the store (app-owned certificates) wait on it.
func (s *Store) Changes() <-chan struct{} { return s.changes }

func (s *Store) notify() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// External returns the external certificate loaded from dir, nil if none.
func (s *Store) External(dir string) *tls.Certificate {
	for _, e := range s.externals.Load().entries {
		if e.dir == dir {
			return e.cert
		}
	}
	return nil
}

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
