package report

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
)

func TestReporter(t *testing.T) {
	var mu sync.Mutex
	var got []eventsapi.Request
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req eventsapi.Request
		if r.Method != http.MethodPost || r.URL.Path != eventsapi.Path || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		if req.Reason == "refused" {
			http.Error(w, "reason refused", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	r := New(srv.URL, "web-1", srv.Client(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.Report("refused", "a refusal is logged, not retried")
	r.Report(eventsapi.ReasonAppReloaded, "told")
	poll.Eventually(t, 10*time.Second, "both reports", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2, "not yet"
	})
	if got[1] != (eventsapi.Request{Pod: "web-1", Reason: eventsapi.ReasonAppReloaded, Message: "told"}) {
		t.Fatalf("sent %+v", got[1])
	}

	// A full queue drops instead of blocking the writer.
	stuck := New(srv.URL, "web-1", srv.Client(), nil) // never Run
	for range queue + 5 {
		stuck.Report(eventsapi.ReasonAppReloaded, "x")
	}
	var none *Reporter
	none.Report(eventsapi.ReasonAppReloaded, "outside Kubernetes: nothing to report to")
}
