package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// waitReadyMain implements "podtls-sidecar wait-ready": it blocks until the
// sidecar's /readyz answers 200. The webhook uses it as the postStart hook
// of the legacy (pre-native-sidecar) injection, so kubelet starts the app
// containers only once the certificate is loaded.
func waitReadyMain(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("podtls-sidecar wait-ready", flag.ContinueOnError)
	fs.SetOutput(out)
	admin := fs.String("admin", "127.0.0.1:15000", "`ADDR` of the sidecar's admin server")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintln(out, "podtls-sidecar wait-ready: usage: wait-ready [--admin ADDR] [--timeout DURATION]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := waitReady(ctx, "http://"+*admin+"/readyz"); err != nil {
		fmt.Fprintf(out, "podtls-sidecar wait-ready: %s not ready after %s: %v\n", *admin, *timeout, err)
		return 1
	}
	return 0
}

func waitReady(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	last := errors.New("no answer yet")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz answered %d", resp.StatusCode)
		} else if ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}
