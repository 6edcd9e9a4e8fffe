// Command hop is the demo's application: a plain-HTTP service that knows nothing
// about TLS. Its podtls sidecar terminates mTLS in front of it (HTTP mode) and
// tells it who called in X-Podtls-Client-Id; it calls the next service through
// its sidecar's outbound listener on loopback. The answer traces the whole call:
//
//	customer       <- spiffe://cluster.local/ns/demo/sa/visitor
//	preference     <- spiffe://cluster.local/ns/demo/sa/customer
//	recommendation <- spiffe://cluster.local/ns/demo/sa/preference
//
//	hop serve -name NAME [-addr 127.0.0.1:8080] [-next URL]
//	hop get [-timeout 60s] URL     print URL's body (retrying until the mesh is up)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const idHeader = "X-Podtls-Client-Id"

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hop serve|get ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:], log)
	case "get":
		err = get(os.Args[2:], os.Stdout, log)
	default:
		err = fmt.Errorf("unknown command %q (want serve or get)", os.Args[1])
	}
	if err != nil {
		log.Error("hop failed", "err", err)
		os.Exit(1)
	}
}

func serve(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("name", "", "service name shown in the trace")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (loopback: the sidecar fronts it)")
	next := fs.String("next", "", "URL of the next hop, usually the sidecar's outbound listener")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("serve: -name is required")
	}
	srv := &http.Server{Addr: *addr, Handler: handler(*name, *next, &http.Client{Timeout: 10 * time.Second}, log), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Info("serving", "name", *name, "addr", *addr, "next", *next)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", *addr, err)
	}
	return nil
}

// handler answers with one trace line (who called, as the sidecar verified it)
// followed by the next hop's answer.
func handler(name, next string, client *http.Client, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		caller := callerOf(r)
		log.Info("request", "caller", caller, "path", r.URL.Path)
		line := fmt.Sprintf("%-15s <- %s\n", name, caller)
		if next == "" {
			fmt.Fprint(w, line)
			return
		}
		body, err := fetch(r.Context(), client, next)
		if err != nil {
			log.Warn("next hop failed", "next", next, "err", err)
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "%s%-15s -> %s failed: %v\n", line, name, next, err)
			return
		}
		fmt.Fprint(w, line)
		w.Write(body)
	})
	return mux
}

func get(args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 60*time.Second, "keep retrying this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: hop get [-timeout D] URL")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(*timeout)
	for attempt := 1; ; attempt++ {
		body, err := fetch(context.Background(), client, fs.Arg(0))
		if err == nil {
			_, err = out.Write(body)
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("get %s: %w (after %d attempts)", fs.Arg(0), err, attempt)
		}
		log.Info("retrying", "url", fs.Arg(0), "attempt", attempt, "err", err)
		time.Sleep(time.Second)
	}
}

func fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %s: %s", url, resp.Status, body)
	}
	return body, nil
}

// callerOf names who called, as the sidecar saw it: the verified SPIFFE ID of
// a mesh peer, or, for a TLS client without a certificate at the public edge,
// the host name it asked for (the sidecar sets X-Forwarded-*).
func callerOf(r *http.Request) string {
	if id := r.Header.Get(idHeader); id != "" {
		return id
	}
	if r.Header.Get("X-Forwarded-Proto") == "https" {
		return fmt.Sprintf("public client (TLS for %s, no client certificate)", r.Host)
	}
	return "(no verified identity)"
}
