// Command whoami is the mesh test's server app: it answers every request with its
// hostname and the client identity the podtls sidecar put into X-Podtls-Client-Id, so
// the test sees which identity the server side verified (e2e/apps/echo prints no headers).
//
//	whoami -addr 127.0.0.1:8080    "/" answers "<hostname> client-id=<header>", "/healthz" ok
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	host, _ := os.Hostname()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Podtls-Client-Id")
		// One line per request that reached the app: the test checks refused callers never do.
		log.Info("request", "client_id", id, "remote", r.RemoteAddr, "path", r.URL.Path)
		fmt.Fprintf(w, "%s client-id=%s\n", host, id)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("serving", "addr", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "addr", *addr, "err", err)
		os.Exit(1)
	}
}
