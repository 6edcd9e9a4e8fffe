package controller

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The servers' context ends only when the delay has passed after the stop signal, and
// the drainer drains from the signal on.
func TestDrainerDelaysTheStop(t *testing.T) {
	fire := make(chan time.Time)
	var asked time.Duration
	d := &drainer{after: func(delay time.Duration) <-chan time.Time { asked = delay; return fire }}
	parent, stop := context.WithCancel(context.Background())
	ctx, cancel := d.serveUntil(parent, 7*time.Second, slog.New(slog.DiscardHandler))
	defer cancel()
	if err := d.ready(nil); err != nil {
		t.Fatalf("ready before the stop: %v", err)
	}
	stop()
	// The delay timer is asked for once draining has begun: wait for that, not for time.
	for d.ready(nil) == nil {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-ctx.Done():
		t.Fatal("servers stopped before the delay")
	default:
	}
	fire <- time.Now()
	<-ctx.Done()
	if asked != 7*time.Second {
		t.Errorf("delay %s, want 7s", asked)
	}
}

// While draining, the server closes every connection after its response, on HTTP/1.1
// and HTTP/2 alike, so clients open new ones (to another replica); before, connections
// are reused.
func TestDrainerClosesConnections(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http/1.1", true: "h2"}[h2], func(t *testing.T) {
			d := &drainer{}
			var opened, closed atomic.Int32
			srv := httptest.NewUnstartedServer(d.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "ok")
			})))
			srv.EnableHTTP2 = h2
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					opened.Add(1)
				case http.StateClosed, http.StateHijacked:
					closed.Add(1)
				}
			}
			srv.StartTLS()
			defer srv.Close()
			client := srv.Client()
			defer client.CloseIdleConnections()
			want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
			get := func() {
				t.Helper()
				resp, err := client.Get(srv.URL)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Proto != want {
					t.Fatalf("protocol %s, want %s", resp.Proto, want)
				}
			}
			get()
			get()
			if n := opened.Load(); n != 1 {
				t.Fatalf("%d connections for two requests before draining, want 1 (reused)", n)
			}
			d.draining.Store(true)
			for i := int32(1); i <= 2; i++ {
				get()
				deadline := time.Now().Add(5 * time.Second)
				for closed.Load() < i {
					if time.Now().After(deadline) {
						t.Fatalf("request %d while draining: the server kept the connection open", i)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			if n := opened.Load(); n != 2 {
				t.Errorf("%d connections, want 2: the first draining request closes the old one, the second opens a new one", n)
			}
		})
	}
}
