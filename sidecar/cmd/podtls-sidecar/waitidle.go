package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/podtls/podtls/sidecar/admin"
)

// waitIdleMain implements "podtls-sidecar wait-idle": it blocks until the
// sidecar has held no connection for --quiet, or until --timeout. The
// webhook uses it as the sidecar's preStop hook in legacy placement, where
// kubelet stops every container at once: the sidecar keeps serving while the
// app finishes its last calls, and SIGTERM (after the hook) starts its drain.
func waitIdleMain(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("podtls-sidecar wait-idle", flag.ContinueOnError)
	fs.SetOutput(out)
	adminAddr := fs.String("admin", "127.0.0.1:15000", "`ADDR` of the sidecar's admin server")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long (the drain timeout)")
	quiet := fs.Duration("quiet", time.Second, "how long no connection may be open before the sidecar counts as idle")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *timeout <= 0 || *quiet < 0 {
		fmt.Fprintln(out, "podtls-sidecar wait-idle: usage: wait-idle [--admin ADDR] [--timeout DURATION] [--quiet DURATION]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := waitIdle(ctx, "http://"+*adminAddr+"/connections", *quiet); err != nil {
		fmt.Fprintf(out, "podtls-sidecar wait-idle: %s not idle after %s: %v\n", *adminAddr, *timeout, err)
		return 1
	}
	return 0
}

// waitIdle polls url (GET /connections) until it has answered "open": 0 for
// quiet. A sidecar that is not running has nothing to drain.
func waitIdle(ctx context.Context, url string, quiet time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var idleSince time.Time
	last := errors.New("no answer yet")
	for {
		open, err := openConnections(ctx, client, url)
		now := time.Now()
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil
		case err != nil:
			if ctx.Err() == nil {
				last = err
			}
			idleSince = time.Time{}
		case open > 0:
			last = fmt.Errorf("%d connection(s) still open", open)
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = now
			fallthrough
		default:
			if now.Sub(idleSince) >= quiet {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func openConnections(ctx context.Context, client *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/connections answered %d", resp.StatusCode)
	}
	var c admin.ConnectionsResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&c); err != nil {
		return 0, fmt.Errorf("decode /connections: %w", err)
	}
	return c.Open, nil
}
