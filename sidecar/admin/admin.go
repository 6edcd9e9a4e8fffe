// Package admin serves the sidecar's health, readiness, metrics and
// certificate metadata. It never serves keys and has no pprof.
package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/sidecar/metrics"
)

// Snapshotter is the part of certs.Store the admin endpoints read.
type Snapshotter interface {
	Ready() bool
	Snapshot() certs.Snapshot
}

// Handler returns the admin mux. ready gates /readyz beyond the store (for
// example until the listeners are bound); nil means always.
func Handler(store Snapshotter, reg *metrics.Registry, ready func() bool, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
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
		default:
			writeText(w, http.StatusOK, "ok\n")
		}
	})
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
	return mux
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
