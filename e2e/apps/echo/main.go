// Command echo is the e2e test application: one static binary that serves, fetches and
// reads files, so the test image needs no shell.
//
//	echo serve -addr :8080 -file /etc/greeting/msg   HTTP: "/" answers "<hostname> <file content>", "/healthz" ok
//	echo get [-timeout 60s] [-cacert FILE] [-method POST] URL   print the body of URL (retrying until timeout), exit 1 on failure
//	echo ws [-timeout 30s] [-cacert F] [-connect H:P] URL MESSAGE  WebSocket: send MESSAGE, print the first message that contains it
//	echo load [-n 900] [-c 4] [-qps 100] [-split K] URL  h2c GETs over one connection; JSON count of answers per backend
//	echo tls-serve -cert-dir D [-client-ca F -allow ID] [-upstream URL ...]  HTTPS with files podtls delivers (tlsapp.go)
//	echo cat FILE                                     print FILE
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: echo serve|get|ws|load|tls-serve|cat ...")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "get":
		return get(args[1:], stdout)
	case "ws":
		return wsEcho(args[1:], stdout)
	case "load":
		return load(args[1:], stdout)
	case "tls-serve":
		return tlsServe(args[1:])
	case "cat":
		if len(args) != 2 {
			return errors.New("usage: echo cat FILE")
		}
		data, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		_, err = stdout.Write(data)
		return err
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", ":8080", "listen address")
	file := fs.String("file", "", "file whose content every response carries (read per request)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		content := ""
		if *file != "" {
			data, err := os.ReadFile(*file)
			if err != nil {
				http.Error(w, "read file: "+err.Error(), http.StatusInternalServerError)
				return
			}
			content = string(data)
		}
		fmt.Fprintf(w, "%s %s\n", host, content)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	slog.Info("serving", "addr", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", *addr, err)
	}
	return nil
}

func get(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 60*time.Second, "keep retrying this long")
	cacert := fs.String("cacert", "", "PEM roots to verify an https URL with (default: system roots)")
	method := fs.String("method", http.MethodGet, "HTTP method (POST sends an empty body)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: echo get [-timeout D] [-cacert FILE] [-method M] URL")
	}
	url := fs.Arg(0)
	client := &http.Client{Timeout: 5 * time.Second}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			return fmt.Errorf("read -cacert: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-cacert %s holds no PEM certificate", *cacert)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	}
	deadline := time.Now().Add(*timeout)
	for attempt := 1; ; attempt++ {
		body, err := fetch(client, *method, url)
		if err == nil {
			_, err = stdout.Write(body)
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("get %s: %w (after %d attempts)", url, err, attempt)
		}
		slog.Info("retrying", "url", url, "attempt", attempt, "err", err)
		time.Sleep(500 * time.Millisecond)
	}
}

func fetch(client *http.Client, method, url string) ([]byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return body, nil
}
