package acmetest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// challengeProxy forwards ACME requests to Pebble unchanged, keeping the
// client's Host header (Pebble builds its URLs and checks JWS URLs from it),
// and holds the response to a challenge POST for Options.ChallengeDelay.
type challengeProxy struct {
	srv  *http.Server
	done chan struct{}
}

func (e *Env) startProxy() (*challengeProxy, error) {
	cert, err := tls.LoadX509KeyPair(e.path("acme/https-cert.pem"), e.path("acme/https-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("acmetest: proxy certificate: %w", err)
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(e.opts.ListenIP, strconv.Itoa(e.opts.ACMEPort)),
		&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("acmetest: proxy listen: %w", err)
	}
	target := &url.URL{Scheme: "https", Host: net.JoinHostPort(e.opts.ListenIP, strconv.Itoa(e.pebblePort))}
	delay := e.opts.ChallengeDelay
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport: e.http.Transport,
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodPost && strings.Contains(resp.Request.URL.Path, "/chalZ/") {
				select {
				case <-time.After(delay):
				case <-resp.Request.Context().Done():
				}
			}
			return nil
		},
		ErrorLog: nil,
	}
	p := &challengeProxy{srv: &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

func (p *challengeProxy) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close()
	}
	<-p.done
}
