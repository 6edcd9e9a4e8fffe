package controller

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// drain keeps a terminating controller serving for a while after SIGTERM.
//
// The kubelet signals the process when the pod starts terminating; the pod leaves the
// Service's endpoints at the same moment, but kube-proxy and the API server's pooled
// connections take a moment to notice. A controller that stopped listening at once
// (podtls 0.1.0 did) refused the admissions sent its way meanwhile, and in namespaces
// with failurePolicy Fail that refused pod creations during every rollout. Draining,
// the controller answers everything, reports not ready, and closes each webhook
// connection after its response, so the API server's next request opens a connection
// to a replica that stays.
type drain struct {
	draining atomic.Bool
}

// errDraining is the readiness check's answer while draining.
var errDraining = errors.New("draining after SIGTERM")

// after returns a context that ends delay after parent ends; in between, d is draining.
// With delay 0 it is parent itself.
func (d *drain) after(parent context.Context, delay time.Duration, log *slog.Logger) context.Context {
	if delay <= 0 {
		return parent
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	go func() {
		<-parent.Done()
		d.draining.Store(true)
		log.Info("draining: serving on, not ready, closing webhook connections after each response", "shutdown_delay", delay)
		t := time.NewTimer(delay)
		defer t.Stop()
		<-t.C
		cancel()
	}()
	return ctx
}

// ready is a readyz check: failing while draining.
func (d *drain) ready(*http.Request) error {
	if d.draining.Load() {
		return errDraining
	}
	return nil
}

// server wraps srv so that every handler registered on it closes its connection after
// the response while draining.
func (d *drain) server(srv ctrlwebhook.Server) ctrlwebhook.Server {
	return drainingServer{Server: srv, d: d}
}

type drainingServer struct {
	ctrlwebhook.Server
	d *drain
}

func (s drainingServer) Register(path string, h http.Handler) {
	s.Server.Register(path, s.d.handler(h))
}

// handler answers like h, with "Connection: close" while draining: net/http then closes
// the connection after the response, and the client does not reuse it.
func (d *drain) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}
