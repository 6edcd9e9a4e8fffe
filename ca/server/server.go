// Package server is the CA's HTTPS API: POST /v1/sign signs a CSR for the
// workload whose projected service-account token (audience podtls-ca) comes
// as the bearer token; GET /v1/trust-bundle returns the roots; and, when
// Options.Discovery is set, GET /v1/endpoints serves endpoint discovery to
// mesh certificates.
//
// The Server is a controller-runtime manager.Runnable that runs on every
// replica (no leader election). Wiring, in the controller's main:
//
//	mat, err := ca.LoadOrCreate(ctx, kube, ca.SecretOptions{Namespace: ns})
//	lister := &services.Lister{Cache: mgr.GetCache(), API: mgr.GetAPIReader()}
//	authority, err := ca.New(mat, ca.Config{TrustDomain: td, Pods: lister})
//	srv, err := server.New(server.Options{
//		Addr:          ":8443",
//		Authority:     authority,
//		Authenticator: server.NewTokenReviewAuthenticator(kube.AuthenticationV1().TokenReviews(), server.TokenReviewOptions{}),
//		DNSNames:      server.ServiceDNSNames("podtls-controller", ns, authority.ClusterDomain()),
//		Metrics:       metrics.Registry, // controller-runtime's
//	})
//	refresher := &ca.Refresher{Authority: authority, Kube: kube, Secret: ca.SecretOptions{Namespace: ns},
//		OnChange: func(*ca.Material) { _ = srv.ServingSource().Renew() }}
//	mgr.Add(srv); mgr.Add(refresher)
//	mgr.AddReadyzCheck("ca", func(*http.Request) error { return srv.Ready() })
//
// Any ca.PodLookup can replace services.Lister.
package server

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
	"github.com/podtls/podtls/tlsconfig"
)

// TrustBundlePath serves the PEM roots (public data, no authentication).
const TrustBundlePath = "/v1/trust-bundle"

// Defaults of Options.
const (
	DefaultAddr       = ":8443"
	DefaultServingTTL = 24 * time.Hour
	// DefaultRate and DefaultBurst limit sign requests per pod (or per
	// service account for tokens not bound to a pod). A pod needs one
	// certificate a day; retries back off.
	DefaultRate  = rate.Limit(1)
	DefaultBurst = 10
)

// Options configure a Server.
type Options struct {
	// Addr to listen on; DefaultAddr if empty. Ignored if Listener is set.
	Addr string
	// Listener to serve on instead of Addr (tests use 127.0.0.1:0).
	Listener net.Listener
	// Authority signs the certificates. Required.
	Authority *ca.Authority
	// Authenticator checks bearer tokens. Required.
	Authenticator Authenticator
	// DNSNames and IPs of the server's own certificate, which the Authority
	// issues and the server renews. At least one is required.
	DNSNames []string
	IPs      []net.IP
	// ServingTTL of the server's own certificate; DefaultServingTTL if 0.
	ServingTTL time.Duration
	// Rate and Burst of the per-caller token bucket; DefaultRate and
	// DefaultBurst if 0. rate.Inf disables the limit.
	Rate  rate.Limit
	Burst int
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
	// Metrics, if set, receives the CA's Prometheus metrics (requests by
	// status, signing latency, intermediate expiry); pass controller-runtime's
	// metrics.Registry to serve them on the manager's metrics endpoint.
	Metrics prometheus.Registerer
	// Discovery, if set, is served at discoveryapi.EndpointsPath (the
	// controller passes a discovery.Handler). The server asks every client
	// for an optional certificate and refuses at the handshake one that does
	// not chain to the Authority's current roots; the handler decides which
	// verified identities it serves.
	Discovery http.Handler
	// Events, if set, is served at eventsapi.Path (the controller passes a
	// sidecarevents.Handler), behind the same optional client certificate.
	Events http.Handler
	// Workloads, if set, is served at signapi.JoinPath and RenewPath (the
	// controller passes a workloads.Handler): machines outside Kubernetes.
	Workloads http.Handler
}

// ServiceDNSNames are the names the CA's Service is reached by:
// <service>.<ns>.svc and <service>.<ns>.svc.<clusterDomain>.
func ServiceDNSNames(service, namespace, clusterDomain string) []string {
	return identity.ServiceDNSNames(service, namespace, clusterDomain)
}

// Server is the CA's HTTPS server.
type Server struct {
	opts      Options
	log       *slog.Logger
	limiter   *limiter
	serving   *ca.ServingSource
	metrics   *metrics
	listening atomic.Bool
	now       func() time.Time
}

// New validates opts and issues the server's first serving certificate.
func New(opts Options) (*Server, error) {
	if opts.Authority == nil {
		return nil, errors.New("ca server: Authority is required")
	}
	if opts.Authenticator == nil {
		return nil, errors.New("ca server: Authenticator is required")
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.ServingTTL == 0 {
		opts.ServingTTL = DefaultServingTTL
	}
	if opts.Rate == 0 {
		opts.Rate = DefaultRate
	}
	if opts.Burst == 0 {
		opts.Burst = DefaultBurst
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "ca-server")
	src, err := ca.NewServingSource(opts.Authority, opts.DNSNames, opts.IPs, opts.ServingTTL, log)
	if err != nil {
		return nil, fmt.Errorf("ca server: %w", err)
	}
	met, err := newMetrics(opts.Metrics, opts.Authority)
	if err != nil {
		return nil, fmt.Errorf("ca server: %w", err)
	}
	return &Server{
		metrics: met,
		opts:    opts,
		log:     log,
		limiter: newLimiter(opts.Rate, opts.Burst, 10000),
		serving: src,
		now:     time.Now,
	}, nil
}

// TLSConfig is the server's TLS configuration
// (tlsconfig.WebServerOptionalClientCert: TLS 1.2 at least, 1.3 whenever the
// client has it), certificate from the renewing source. A client
// certificate is optional (sign requests authenticate by token); one that
// is sent must chain to the Authority's roots of the moment, or the
// handshake fails.
func (s *Server) TLSConfig() *tls.Config {
	return tlsconfig.WebServerOptionalClientCert(s.serving.GetCertificate, s.opts.Authority.TrustPool, tlsconfig.Options{})
}

// ServingSource is the server's own renewing certificate; call its Renew
// after the CA's material changed.
func (s *Server) ServingSource() *ca.ServingSource { return s.serving }

// NeedLeaderElection tells controller-runtime to run the server on every replica.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready returns nil once the server is listening.
func (s *Server) Ready() error {
	if !s.listening.Load() {
		return errors.New("ca server not serving yet")
	}
	return nil
}

// Start serves until ctx ends, then shuts down gracefully.
func (s *Server) Start(ctx context.Context) error {
	ln := s.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.opts.Addr); err != nil {
			return fmt.Errorf("ca server: listen on %s: %w", s.opts.Addr, err)
		}
	}
	hs := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go func() { _ = s.serving.Start(renewCtx) }()

	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	s.listening.Store(true)
	s.log.Info("serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		s.listening.Store(false)
		return fmt.Errorf("ca server: %w", err)
	case <-ctx.Done():
	}
	s.listening.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("ca server: shutdown: %w", err)
	}
	return nil
}

// Handler returns the HTTP handler (without TLS), for tests and embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(signapi.SignPath, s.handleSign)
	mux.HandleFunc(TrustBundlePath, s.handleTrustBundle)
	if s.opts.Discovery != nil {
		mux.Handle(discoveryapi.EndpointsPath, s.opts.Discovery)
	}
	if s.opts.Events != nil {
		mux.Handle(eventsapi.Path, s.opts.Events)
	}
	if s.opts.Workloads != nil {
		mux.Handle(signapi.JoinPath, s.opts.Workloads)
		mux.Handle(signapi.RenewPath, s.opts.Workloads)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func (s *Server) handleTrustBundle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed; use GET")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(s.opts.Authority.TrustBundlePEM())
}

// statusRecorder remembers the status code written, for metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) handleSign(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	s.sign(rec, r)
	s.metrics.observe(rec.code, time.Since(start).Seconds())
}

func (s *Server) sign(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed; use POST")
		return
	}
	token, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="podtls-ca"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token (Authorization: Bearer <projected service-account token, audience "+signapi.Audience+">)")
		return
	}
	caller, err := s.opts.Authenticator.Authenticate(r.Context(), token)
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			s.log.Info("sign request denied: unauthenticated", "remote", r.RemoteAddr, "reason", err.Error())
			w.Header().Set("WWW-Authenticate", `Bearer realm="podtls-ca", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if errors.Is(err, ErrReviewRateLimited) {
			s.log.Warn("token reviews rate limited", "remote", r.RemoteAddr)
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "too many new tokens to review; retry later")
			return
		}
		s.log.Error("token review failed", "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusServiceUnavailable, "cannot review the token now; retry later")
		return
	}
	log := s.log.With("namespace", caller.Namespace, "service_account", caller.ServiceAccount, "pod", caller.PodName)

	key := caller.Namespace + "/" + caller.ServiceAccount + "/" + caller.PodName
	if !s.limiter.allow(key, s.now()) {
		log.Info("sign request rate limited")
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "too many sign requests; retry later")
		return
	}

	req, ttl, err := signapi.DecodeSignRequest(http.MaxBytesReader(w, r.Body, signapi.MaxRequestBytes))
	if err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		log.Info("sign request rejected", "status", status, "reason", err.Error())
		writeError(w, status, err.Error())
		return
	}

	issued, err := s.opts.Authority.Sign(r.Context(), caller, []byte(req.CSR), ttl)
	if err != nil {
		status := statusOf(err)
		if status >= 500 {
			log.Error("sign failed", "status", status, "err", err)
		} else {
			log.Info("sign request rejected", "status", status, "reason", err.Error())
		}
		writeError(w, status, err.Error())
		return
	}
	leaf := issued.Certificate
	log.Info("issued certificate", "serial", hex.EncodeToString(leaf.SerialNumber.Bytes()),
		"dns_names", leaf.DNSNames, "not_after", leaf.NotAfter)
	writeJSON(w, http.StatusOK, signapi.SignResponse{
		CertificateChain: string(issued.ChainPEM),
		TrustBundle:      string(issued.TrustBundlePEM),
		NotAfter:         leaf.NotAfter.UTC().Format(time.RFC3339),
	})
}

// statusOf maps Authority errors to HTTP status codes.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ca.ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ca.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ca.ErrNotReady):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// bearerToken extracts the token of an "Authorization: Bearer <token>" header.
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenBytes {
		return "", false
	}
	return token, true
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, signapi.Error{Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// The client may be gone; nothing useful to do with the error.
	_ = json.NewEncoder(w).Encode(v)
}
