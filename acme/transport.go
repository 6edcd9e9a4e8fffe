package acme

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/tlsconfig"
)

// newHTTPClient returns the base client for the ACME server: the given one,
// or one trusting cfg.CABundle (system roots when empty) with TLS 1.2+.
func newHTTPClient(cfg issuerconfig.Config, given *http.Client) (*http.Client, error) {
	if given != nil {
		return given, nil
	}
	var roots *x509.CertPool // nil: the system's
	if cfg.CABundle != "" {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(cfg.CABundle)) {
			return nil, errors.New("acme issuer: caBundle holds no certificate")
		}
	}
	tlsConfig := tlsconfig.PublicClient(roots, "", tlsconfig.Options{})
	return &http.Client{
		Timeout: 2 * time.Minute, // one request, including a slow finalize
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tlsConfig,
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
			ForceAttemptHTTP2:     true,
		},
	}, nil
}

// withContext returns a client sharing base's transport whose requests carry
// ctx: lego builds its requests without a context, so this is what makes a
// cancelled reconcile stop talking to the ACME server.
func withContext(ctx context.Context, base *http.Client) *http.Client {
	c := *base
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = ctxTransport{ctx: ctx, base: rt}
	return &c
}

type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.ctx.Err(); err != nil {
		if r.Body != nil {
			_ = r.Body.Close() // RoundTrip must close the body
		}
		return nil, err
	}
	return t.base.RoundTrip(r.WithContext(t.ctx))
}
