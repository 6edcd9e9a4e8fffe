// Command whoami is the mesh test's HTTP app. As a server it answers every request with
// its hostname and the client identity the podtls sidecar put into X-Podtls-Client-Id, so
// the test sees which identity the server side verified (e2e/apps/echo prints no headers).
// As a client it sends a forged X-Podtls-Client-Id, which the server's sidecar must replace.
//
//	whoami serve [-addr 127.0.0.1:8080]   "/" answers "<hostname> client-id=<header>"; logs each request
//	whoami get [-timeout 60s] URL         GET URL with a forged identity header (retrying), print the body
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// ForgedID is what the client claims to be; a sidecar in HTTP mode must never pass it on.
const ForgedID = "spiffe://cluster.local/ns/kube-system/sa/forged"

const idHeader = "X-Podtls-Client-Id"

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if len(os.Args) < 2 {
		log.Error("usage: whoami serve|get ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:], log)
	case "get":
		err = get(os.Args[2:], log)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		log.Error("whoami failed", "err", err)
		os.Exit(1)
	}
}

func serve(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ids := r.Header.Values(idHeader)
		// One line per request that reached the app: the test checks refused callers never do.
		log.Info("request", "client_ids", ids, "remote", r.RemoteAddr, "path", r.URL.Path)
		id := ""
		if len(ids) == 1 {
			id = ids[0]
		} else if len(ids) > 1 {
			id = fmt.Sprintf("%q", ids) // more than one value is a failure the test shows
		}
		fmt.Fprintf(w, "%s client-id=%s\n", host, id)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("serving", "addr", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", *addr, err)
	}
	return nil
}

func get(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 60*time.Second, "keep retrying this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: whoami get [-timeout D] URL")
	}
	url := fs.Arg(0)
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(*timeout)
	for attempt := 1; ; attempt++ {
		body, err := fetch(client, url)
		if err == nil {
			_, err = os.Stdout.Write(body)
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("get %s: %w (after %d attempts)", url, err, attempt)
		}
		log.Info("retrying", "url", url, "attempt", attempt, "err", err)
		time.Sleep(500 * time.Millisecond)
	}
}

func fetch(client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	req.Header.Set(idHeader, ForgedID)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return body, nil
}
