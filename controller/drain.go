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

// drainer keeps a stopping replica serving for a while: once the process is asked to stop,
// readiness fails and every webhook response closes its connection (HTTP/1.1
// "Connection: close", a GOAWAY on HTTP/2), so the Service stops sending new connections
// here and the API server drops its pooled ones, while requests already on their way are
// still answered. Only after the delay do the servers stop. Without it a replica closes its
// listener and idle connections at SIGTERM, before kube-proxy has moved the Service to
// the other replica, and the API server's next admission on such a connection fails (a
// "broken pipe" refusal, seen in the two-node drain test). kube-apiserver's
// --shutdown-delay-duration is the same idea.
type drainer struct {
	draining atomic.Bool
	// after is time.After; tests replace it.
	after func(time.Duration) <-chan time.Time
}

// serveUntil returns the context the servers run under: it ends delay after parent ends,
// and the drainer drains from parent's end on.
func (d *drainer) serveUntil(parent context.Context, delay time.Duration, log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	after := d.after
	if after == nil {
		after = time.After
	}
	go func() {
		select {
		case <-parent.Done():
		case <-ctx.Done():
			return
		}
		d.draining.Store(true)
		log.Info("draining: readiness fails, connections close after their response", "shutdown_delay", delay.String())
		select {
		case <-after(delay):
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// ready is a readiness check: it fails while draining.
func (d *drainer) ready(*http.Request) error {
	if d.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// wrap makes h close its connection after each response while draining.
func (d *drainer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// drainingServer is a webhook server whose handlers are wrapped by the drainer.
type drainingServer struct {
	ctrlwebhook.Server
	d *drainer
}

func (s drainingServer) Register(path string, hook http.Handler) {
	s.Server.Register(path, s.d.wrap(hook))
}
