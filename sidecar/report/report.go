// Package report sends what happens in the pod that only the sidecar sees
// (app-owned files it could not write, reload actions) to the controller,
// which records it as a Kubernetes Event on the pod (sidecarevents). Best
// effort: a report that cannot be sent is logged and dropped, never retried
// into a flood, and never blocks the caller.
package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/podtls/podtls/sidecarevents/eventsapi"
)

// queue bounds the reports waiting to be sent.
const queue = 16

// Reporter posts reports to the controller's eventsapi.Path.
type Reporter struct {
	url  string
	pod  string
	http *http.Client
	log  *slog.Logger
	ch   chan eventsapi.Request
}

// New returns a reporter for pod, posting to base (https://host:port) with
// client (which presents the mesh certificate).
func New(base, pod string, client *http.Client, log *slog.Logger) *Reporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{url: base + eventsapi.Path, pod: pod, http: client, log: log.With("component", "report"), ch: make(chan eventsapi.Request, queue)}
}

// Report queues an Event; it drops it when the queue is full.
func (r *Reporter) Report(reason, message string) {
	if r == nil {
		return
	}
	select {
	case r.ch <- eventsapi.Request{Pod: r.pod, Reason: reason, Message: message}:
	default:
		r.log.Warn("event report dropped: too many pending", "reason", reason)
	}
}

// Run sends the queued reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-r.ch:
			if err := r.send(ctx, req); err != nil {
				r.log.Warn("event not recorded", "reason", req.Reason, "error", err)
			}
		}
	}
}

func (r *Reporter) send(ctx context.Context, req eventsapi.Request) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(hr)
	if err != nil {
		return fmt.Errorf("POST %s: %w", r.url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST %s: %s: %s", r.url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
