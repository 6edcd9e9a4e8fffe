package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// loadReport is what `echo load` prints: which backend answered each request,
// split at request -split (the e2e test disturbs the backends after that one).
type loadReport struct {
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Before   map[string]int `json:"before"`
	After    map[string]int `json:"after"`
	Errors   []string       `json:"errors,omitempty"`
}

// load sends -n GET requests at -qps, -c at a time, over one HTTP/2
// connection without TLS (h2c prior knowledge, as a gRPC client with insecure
// credentials talks to its sidecar), reads the JSON field -field of each
// answer (podinfo's /api/info names its pod in "hostname") and prints a
// loadReport. It logs "progress N" every 100 answers on stderr. It exits 1
// only when the first request never succeeds within -timeout.
func load(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	n := fs.Int("n", 900, "requests to send")
	c := fs.Int("c", 4, "requests in flight")
	qps := fs.Int("qps", 100, "requests per second")
	split := fs.Int("split", 0, "count requests before this index apart (0: n)")
	field := fs.String("field", "hostname", "JSON field that names the backend")
	timeout := fs.Duration("timeout", 60*time.Second, "how long the first request may take to succeed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *n < 1 || *c < 1 || *qps < 1 {
		return errors.New("usage: echo load [-n N] [-c C] [-qps Q] [-split K] [-field F] URL")
	}
	if *split <= 0 || *split > *n {
		*split = *n
	}
	url := fs.Arg(0)
	tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 1}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	deadline := time.Now().Add(*timeout)
	for {
		_, err := backendOf(client, url, *field)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("first request to %s: %w", url, err)
		}
		log.Info("waiting for the first answer", "err", err)
		time.Sleep(500 * time.Millisecond)
	}

	rep := loadReport{Requests: *n, Before: map[string]int{}, After: map[string]int{}}
	var mu sync.Mutex
	done := 0
	next := make(chan int)
	var wg sync.WaitGroup
	for range *c {
		wg.Go(func() {
			for i := range next {
				host, err := backendOf(client, url, *field)
				mu.Lock()
				switch {
				case err != nil:
					rep.Failed++
					if len(rep.Errors) < 20 {
						rep.Errors = append(rep.Errors, fmt.Sprintf("request %d at %s: %v", i, time.Now().UTC().Format(time.RFC3339Nano), err))
					}
				case i < *split:
					rep.Before[host]++
				default:
					rep.After[host]++
				}
				done++
				if done%100 == 0 {
					log.Info(fmt.Sprintf("progress %d", done))
				}
				mu.Unlock()
			}
		})
	}
	tick := time.NewTicker(time.Second / time.Duration(*qps))
	for i := range *n {
		<-tick.C
		next <- i
	}
	tick.Stop()
	close(next)
	wg.Wait()
	return json.NewEncoder(stdout).Encode(rep)
}

func backendOf(client *http.Client, url, field string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, body)
	}
	if resp.ProtoMajor != 2 {
		return "", fmt.Errorf("answered over %s, want HTTP/2", resp.Proto)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return "", fmt.Errorf("answer is not JSON: %w", err)
	}
	s, ok := m[field].(string)
	if !ok || s == "" {
		return "", fmt.Errorf("answer has no string field %q", field)
	}
	return s, nil
}
