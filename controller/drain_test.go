package controller

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
)

func TestDrain(t *testing.T) {
	var d drain
	parent, stop := context.WithCancel(context.Background())
	ctx := d.after(parent, 300*time.Millisecond, slog.New(slog.DiscardHandler))
	h := d.handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	connection := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate-v1-pod", nil))
		return rec.Header().Get("Connection")
	}
	if err := d.ready(nil); err != nil || connection() != "" {
		t.Fatalf("before SIGTERM: ready %v, Connection %q; want ready and keep-alive", err, connection())
	}

	stopped := time.Now()
	stop()
	poll.Eventually(t, time.Second, "draining", func() (bool, string) { return d.ready(nil) != nil, "still ready" })
	if ctx.Err() != nil {
		t.Fatal("the run context ended with its parent, without the delay")
	}
	if got := connection(); got != "close" {
		t.Errorf("while draining Connection %q, want close", got)
	}
	<-ctx.Done()
	if took := time.Since(stopped); took < 300*time.Millisecond {
		t.Errorf("the run context ended %s after its parent, before the delay", took)
	}
}

func TestDrainWithoutDelay(t *testing.T) {
	var d drain
	parent := context.Background()
	if got := d.after(parent, 0, slog.New(slog.DiscardHandler)); got != parent {
		t.Error("delay 0: want the parent context itself")
	}
}
