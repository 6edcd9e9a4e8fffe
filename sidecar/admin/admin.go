// Package admin serves the sidecar's health, readiness, metrics and
// certificate metadata. It never serves keys and has no pprof.
package admin

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/sidecar/exposure"
	"github.com/podtls/podtls/sidecar/metrics"
)

// Snapshotter is the part of certs.Store the admin endpoints read.
type Snapshotter interface {
	Ready() bool
	Snapshot() certs.Snapshot
}

// Renewer forces a mesh-certificate renewal and returns the new leaf
// (agent.Agent.RenewNow).
type Renewer func(ctx context.Context) (*x509.Certificate, error)

// Option adds an optional endpoint to the admin mux.
type Option func(*options)

type options struct {
	open          func() int64
	plaintext     func() exposure.Report
	appProbes     http.Handler
	renew         Renewer
	renewTimeout  time.Duration
	renewInterval time.Duration
	now           func() time.Time
	filesReady    func() bool
	files         func() any
}

// DefaultRenewInterval is the least time between two successful forced
// renewals: every container of the pod shares its loopback, and none of them
// should be able to make the CA sign in a loop.
const DefaultRenewInterval = 10 * time.Second

// WithRenewer enables POST /renew. Without it (file mode: certificates come
// from elsewhere) /renew answers 409.
func WithRenewer(r Renewer) Option { return func(o *options) { o.renew = r } }

// WithConnections enables GET /connections, answering {"open": N} with N
// from open: the client connections the proxy holds (the legacy preStop
// hook, podtls-sidecar wait-idle, polls it).
func WithConnections(open func() int64) Option { return func(o *options) { o.open = open } }

// WithPlaintext enables GET /plaintext, answering the last plaintext-bypass
// check (exposure.Checker.Report) as JSON.
func WithPlaintext(report func() exposure.Report) Option {
	return func(o *options) { o.plaintext = report }
}

// ConnectionsResponse is the JSON answer of GET /connections.
type ConnectionsResponse struct {
	Open int64 `json:"open"`
}

// WithAppProbes serves the app's rewritten probes (contract.AppHealthPrefix) with h
// (probe.Prober).
func WithAppProbes(h http.Handler) Option { return func(o *options) { o.appProbes = h } }

// WithAppCerts holds /readyz until the app-owned certificate files are
// written (ready) and serves GET /app-certs, the state of each source
// directory (statuses, appcerts.Writer.Statuses).
func WithAppCerts[T any](ready func() bool, statuses func() T) Option {
	return func(o *options) { o.filesReady, o.files = ready, func() any { return statuses() } }
}

// WithRenewInterval overrides DefaultRenewInterval and the clock (tests).
func WithRenewInterval(d time.Duration, now func() time.Time) Option {
	return func(o *options) { o.renewInterval, o.now = d, now }
}

// RenewResponse is the JSON answer of a successful POST /renew.
type RenewResponse struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// Handler returns the admin mux. ready gates /readyz beyond the store (for
// example until the listeners are bound); nil means always.
func Handler(store Snapshotter, reg *metrics.Registry, ready func() bool, log *slog.Logger, opts ...Option) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := options{renewTimeout: time.Minute, renewInterval: DefaultRenewInterval, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	var (
		renewMu   sync.Mutex // one forced renewal at a time
		lastRenew time.Time  // of the last successful one
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !store.Ready():
			writeText(w, http.StatusServiceUnavailable, "no valid mesh certificate loaded yet\n")
		case ready != nil && !ready():
			writeText(w, http.StatusServiceUnavailable, "listeners not serving\n")
		case o.filesReady != nil && !o.filesReady():
			writeText(w, http.StatusServiceUnavailable, "app certificate files not written yet\n")
		default:
			writeText(w, http.StatusOK, "ok\n")
		}
	})
	if o.appProbes != nil {
		// The kubelet calls these on the pod IP: they only run the probes the
		// webhook configured, against the app on loopback.
		mux.Handle("GET "+contract.AppHealthPrefix, o.appProbes)
	}
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := reg.WriteText(w); err != nil {
			log.Debug("write metrics", "error", err)
		}
	})
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(store.Snapshot()); err != nil {
			log.Debug("write certs", "error", err)
		}
	})
	if o.open != nil {
		mux.HandleFunc("GET /connections", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if err := json.NewEncoder(w).Encode(ConnectionsResponse{Open: o.open()}); err != nil {
				log.Debug("write connections", "error", err)
			}
		})
	}
	if o.files != nil {
		mux.HandleFunc("GET /app-certs", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(o.files()); err != nil {
				log.Debug("write app-certs", "error", err)
			}
		})
	}
	if o.plaintext != nil {
		mux.HandleFunc("GET /plaintext", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(o.plaintext()); err != nil {
				log.Debug("write plaintext", "error", err)
			}
		})
	}
	// The admin port listens on the pod IP for kubelet probes, so anything
	// that changes state is refused unless it comes from inside the pod
	// (kubectl exec ... podtls-sidecar renew connects over loopback).
	mux.HandleFunc("/renew", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeText(w, http.StatusMethodNotAllowed, "use POST\n")
			return
		}
		if !fromLoopback(r.RemoteAddr) {
			log.Warn("refused /renew from outside the pod", "remote", r.RemoteAddr)
			writeText(w, http.StatusForbidden, "/renew is accepted only from loopback (run podtls-sidecar renew inside the pod)\n")
			return
		}
		if o.renew == nil {
			writeText(w, http.StatusConflict, "no agent: this sidecar reads its certificate from files (--ca-url not set)\n")
			return
		}
		renewMu.Lock()
		defer renewMu.Unlock()
		if wait := lastRenew.Add(o.renewInterval).Sub(o.now()); !lastRenew.IsZero() && wait > 0 {
			secs := int(wait/time.Second) + 1
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeText(w, http.StatusTooManyRequests, fmt.Sprintf("renewed less than %s ago; retry in %ds\n", o.renewInterval, secs))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), o.renewTimeout)
		defer cancel()
		leaf, err := o.renew(ctx)
		if err != nil {
			log.Warn("forced renewal failed", "error", err)
			writeText(w, http.StatusBadGateway, "renewal failed: "+err.Error()+"\n")
			return
		}
		lastRenew = o.now()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(RenewResponse{Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter.UTC()})
	})
	return mux
}

// fromLoopback reports whether a request's RemoteAddr is a loopback address.
func fromLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
