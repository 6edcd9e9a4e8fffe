package discovery

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/tlsconfig"
)

// Defaults of HandlerOptions.
const (
	// DefaultMaxWaitsPerCaller: a sidecar holds one long poll per upstream.
	DefaultMaxWaitsPerCaller = 32
	// DefaultMaxWaits bounds the goroutines and connections long polls hold.
	DefaultMaxWaits = 20000
)

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	// Source answers the queries. Required.
	Source *Source
	// TrustDomain of the callers' SPIFFE IDs. Required.
	TrustDomain string
	// TrustPool returns the CA's current roots; called per request, so
	// rotated roots apply at once. Required.
	TrustPool func() *x509.CertPool
	// ClusterDomain is the DNS suffix of Services;
	// identity.DefaultClusterDomain if empty.
	ClusterDomain string
	// MaxWaitsPerCaller bounds the long polls one caller (one mesh
	// certificate: one pod) holds at once, MaxWaits those of all callers;
	// beyond them a long poll is answered 429. Defaults if 0.
	MaxWaitsPerCaller int
	MaxWaits          int
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
	// Metrics, if set, receives requests by status code and waiting requests.
	Metrics prometheus.Registerer
	// Now is the clock of certificate verification; time.Now if nil.
	Now func() time.Time
}

// Handler serves GET discoveryapi.EndpointsPath to callers holding a mesh
// certificate of the trust domain (see package discoveryapi).
type Handler struct {
	opts    HandlerOptions
	allow   *identity.Matcher
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	waits   int
	waitsBy map[[sha256.Size]byte]int
}

// NewHandler validates o.
func NewHandler(o HandlerOptions) (*Handler, error) {
	if o.Source == nil || o.TrustPool == nil {
		return nil, errors.New("discovery handler: Source and TrustPool are required")
	}
	allow, err := identity.NewMatcher(o.TrustDomain, nil)
	if err != nil {
		return nil, fmt.Errorf("discovery handler: trust domain: %w", err)
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = identity.DefaultClusterDomain
	}
	if o.MaxWaitsPerCaller == 0 {
		o.MaxWaitsPerCaller = DefaultMaxWaitsPerCaller
	}
	if o.MaxWaits == 0 {
		o.MaxWaits = DefaultMaxWaits
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	met, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, fmt.Errorf("discovery handler: %w", err)
	}
	return &Handler{opts: o, allow: allow, log: log.With("component", "discovery"), metrics: met,
		waitsBy: map[[sha256.Size]byte]int{}}, nil
}

// caller is an authenticated client.
type caller struct {
	id  identity.ID
	key [sha256.Size]byte // of its certificate
}

// ServeHTTP answers one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code := h.serve(w, r)
	h.metrics.request(code)
}

// serve answers r and returns the status code, or "canceled".
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) string {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		return writeError(w, http.StatusMethodNotAllowed, "method not allowed; use GET")
	}
	c, err := h.authenticate(r)
	if err != nil {
		h.log.Info("discovery request denied: unauthenticated", "remote", r.RemoteAddr, "reason", err.Error())
		return writeError(w, http.StatusUnauthorized, err.Error())
	}
	q, err := parseQuery(r.URL.Query())
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	svc, ok := ParseHost(q.host, c.id.Namespace, h.opts.ClusterDomain)
	if !ok {
		return writeError(w, http.StatusNotFound, fmt.Sprintf("%s is not a Service host of this cluster", q.host))
	}
	log := h.log.With("spiffe_id", c.id.String(), "service", svc.String(), "port", q.port)

	changed, release := h.opts.Source.Watch(svc)
	defer func() { release() }()
	ans, err := h.opts.Source.Lookup(r.Context(), svc, q.port)
	if err == nil && q.wait > 0 && ans.Version == q.version {
		if !h.acquire(c.key) {
			log.Info("discovery long poll refused: too many waiting requests")
			w.Header().Set("Retry-After", "1")
			return writeError(w, http.StatusTooManyRequests, "too many waiting requests; retry later")
		}
		defer h.releaseWait(c.key)
		h.extendDeadlines(w, q.wait, log)
		timer := time.NewTimer(q.wait)
		defer timer.Stop()
	wait:
		for err == nil && ans.Version == q.version {
			select {
			case <-changed:
				release()
				changed, release = h.opts.Source.Watch(svc)
				ans, err = h.opts.Source.Lookup(r.Context(), svc, q.port)
			case <-timer.C:
				break wait
			case <-h.opts.Source.Done():
				break wait
			case <-r.Context().Done():
				return "canceled"
			}
		}
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return writeError(w, http.StatusNotFound, err.Error())
	case err != nil && r.Context().Err() != nil:
		return "canceled"
	case err != nil:
		log.Error("discovery lookup failed", "err", err)
		w.Header().Set("Retry-After", "1")
		return writeError(w, http.StatusServiceUnavailable, "cannot read endpoints now; retry later")
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, ans)
}

// authenticate checks the caller's mesh certificate against the CA's
// current roots and trust domain. The TLS handshake has verified the chain
// already (tlsconfig.WebServerOptionalClientCert); checking again here keeps
// the rule in this handler whatever server mounts it, and applies roots
// rotated since a long-lived connection was made.
func (h *Handler) authenticate(r *http.Request) (caller, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return caller{}, errors.New("a mesh client certificate is required")
	}
	chain := r.TLS.PeerCertificates
	if err := tlsconfig.VerifyClient(h.opts.TrustPool(), h.allow, chain, h.opts.Now()); err != nil {
		return caller{}, fmt.Errorf("client certificate: %w", err)
	}
	raw, err := tlsconfig.SPIFFEID(chain[0])
	if err != nil {
		return caller{}, fmt.Errorf("client certificate: %w", err)
	}
	id, err := identity.Parse(raw)
	if err != nil {
		return caller{}, fmt.Errorf("client certificate: %w", err)
	}
	return caller{id: id, key: sha256.Sum256(chain[0].Raw)}, nil
}

// acquire takes a waiting slot of key, if there is one.
func (h *Handler) acquire(key [sha256.Size]byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waits >= h.opts.MaxWaits || h.waitsBy[key] >= h.opts.MaxWaitsPerCaller {
		return false
	}
	h.waits++
	h.waitsBy[key]++
	h.metrics.wait(1)
	return true
}

func (h *Handler) releaseWait(key [sha256.Size]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waits--
	if h.waitsBy[key]--; h.waitsBy[key] <= 0 {
		delete(h.waitsBy, key)
	}
	h.metrics.wait(-1)
}

// extendDeadlines lets a long poll outlive the server's read and write
// timeouts (which end an idle HTTP/1 request's context too).
func (h *Handler) extendDeadlines(w http.ResponseWriter, wait time.Duration, log *slog.Logger) {
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(wait + 10*time.Second)
	for _, set := range []func(time.Time) error{rc.SetReadDeadline, rc.SetWriteDeadline} {
		if err := set(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
			log.Debug("cannot extend the connection deadline for a long poll", "err", err)
		}
	}
}

func writeError(w http.ResponseWriter, status int, msg string) string {
	return writeJSON(w, status, discoveryapi.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) string {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// The client may be gone; nothing useful to do with the error.
	_ = json.NewEncoder(w).Encode(v)
	return strconv.Itoa(status)
}
