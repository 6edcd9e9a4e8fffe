package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/sidecar/admin"
	"github.com/podtls/podtls/sidecar/agent"
	"github.com/podtls/podtls/sidecar/appcerts"
	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/sidecar/discover"
	"github.com/podtls/podtls/sidecar/exposure"
	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/sidecar/options"
	"github.com/podtls/podtls/sidecar/probe"
	"github.com/podtls/podtls/sidecar/proxy"
	"github.com/podtls/podtls/sidecar/report"
	"github.com/podtls/podtls/tlsconfig"
)

func newLogger(cfg *options.Config) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
}

// newAccessLogger is the --access-log logger: JSON lines on stdout, apart
// from the sidecar's own log on stderr; nil without the flag.
func newAccessLogger(cfg *options.Config, w io.Writer) *slog.Logger {
	if !cfg.AccessLog {
		return nil
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// systemRoots loads the system roots when a tls:// outbound needs them
// (SSL_CERT_FILE and SSL_CERT_DIR override the location, as for any Go
// program); mesh upstreams never use them.
func systemRoots(outbound []proxy.Outbound) (*x509.CertPool, error) {
	for _, o := range outbound {
		if o.Public {
			pool, err := x509.SystemCertPool()
			if err != nil {
				return nil, fmt.Errorf("--outbound %s: system roots: %w", o, err)
			}
			return pool, nil
		}
	}
	return nil, nil
}

// selfID is the SPIFFE ID of the served mesh certificate, "" before one is loaded.
func selfID(store *certs.Store) string {
	c := store.MeshCertificate()
	if c == nil || c.Leaf == nil {
		return ""
	}
	id, _ := tlsconfig.SPIFFEID(c.Leaf)
	return id
}

// run wires store, agent, proxy and admin server, serves until ctx ends and
// then drains. It returns an error only for problems at start.
func run(ctx context.Context, cfg *options.Config, log *slog.Logger) error {
	reg := metrics.NewRegistry()
	store, err := certs.New(certs.Options{
		CertDir: cfg.CertDir, CredentialBundle: cfg.CredentialBundle, TrustBundle: cfg.TrustBundle, ExternalDirs: cfg.ExternalCertDirs,
		PollInterval: cfg.PollInterval, Logger: log, Registry: reg,
	})
	if err != nil {
		return err
	}
	if err := store.Reload(); err != nil {
		if !cfg.AgentMode() {
			// Never serve without a valid certificate.
			return fmt.Errorf("mesh certificate: %w", err)
		}
		log.Info("waiting for the agent's first certificate", "cert_dir", cfg.CertDir)
	}

	var ag *agent.Agent
	if cfg.AgentMode() {
		envRoots, err := agent.ParseEnvRoots(os.Getenv(contract.EnvTrustRoots))
		if err != nil {
			return fmt.Errorf("env %s: %w", contract.EnvTrustRoots, err)
		}
		ag, err = agent.New(agent.Config{
			CAURL: cfg.CAURL, TokenFile: cfg.TokenFile, Workload: cfg.Workload, DNSNames: cfg.DNSNames, TTL: cfg.CertTTL,
			CertDir: cfg.CertDir, Store: store, ExtraRoots: envRoots,
			TLS: tlsconfig.Options{PostQuantum: cfg.PostQuantum}, Logger: log, Registry: reg,
		})
		if err != nil {
			return err
		}
	}

	clientOpts := tlsconfig.Options{PostQuantum: cfg.PostQuantum}
	ctrlHTTP, ctrlBase := controllerClient(cfg, store, clientOpts)
	reporter := newReporter(ctrlHTTP, ctrlBase, log)
	publicRoots, err := systemRoots(cfg.Outbound)
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{
		Inbound: cfg.Inbound, Outbound: cfg.Outbound, Mode: cfg.Mode,
		ServerTLS: func(alpn []string) *tls.Config {
			return tlsconfig.Server(store, cfg.Matcher, tlsconfig.Options{PostQuantum: cfg.PostQuantum, NextProtos: alpn})
		},
		ALPN: cfg.ALPN,
		ClientTLS: func(o proxy.Outbound) *tls.Config {
			if o.Public {
				return tlsconfig.Egress(publicRoots, o.ServerName, clientOpts)
			}
			return tlsconfig.Client(store, o.ServerName, o.PinnedID, clientOpts)
		},
		HandshakeTimeout: cfg.HandshakeTimeout, IdleTimeout: cfg.IdleTimeout, DialTimeout: cfg.DialTimeout,
		MaxConnections: cfg.MaxConnections, Logger: log, Registry: reg, AccessLog: newAccessLogger(cfg, os.Stdout),
		TrustedProxies: cfg.TrustedProxies, ProxyProtocol: cfg.ProxyProtocol,
		SelfID:    func() string { return selfID(store) },
		Discovery: discoveryClient(ctrlHTTP, ctrlBase, log, reg),
	})
	if err != nil {
		return err
	}
	if err := px.Listen(); err != nil {
		return err
	}
	var redirect *proxy.Redirector
	if cfg.Redirect != nil {
		if redirect, err = proxy.NewRedirector(*cfg.Redirect, log, reg); err != nil {
			return err
		}
		if err := redirect.Listen(); err != nil {
			return err
		}
	}

	plaintext := newPlaintextChecker(cfg, reporter, log, reg)
	files, err := newAppCertWriter(cfg, store, reporter, log, reg)
	if err != nil {
		return err
	}

	var serving atomic.Bool
	adminLn, err := net.Listen("tcp", cfg.Admin)
	if err != nil {
		return fmt.Errorf("--admin %s: %w", cfg.Admin, err)
	}
	adminOpts := []admin.Option{admin.WithConnections(px.Open), admin.WithPlaintext(plaintext.Report)}
	if files != nil {
		adminOpts = append(adminOpts, admin.WithAppCerts(files.Ready, files.Statuses))
	}
	appProbes, err := contract.ParseAppProbes(os.Getenv(contract.EnvAppProbes))
	if err != nil {
		return err
	}
	if len(appProbes) > 0 {
		adminOpts = append(adminOpts, admin.WithAppProbes(probe.New(appProbes, "127.0.0.1", tlsconfig.ProbeClient(tlsconfig.Options{}), log)))
		log.Info("running the app's probes for the kubelet", "paths", len(appProbes))
	}
	if ag != nil {
		adminOpts = append(adminOpts, admin.WithRenewer(ag.RenewNow))
	}
	adminSrv := &http.Server{Handler: admin.Handler(store, reg, serving.Load, log, adminOpts...), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "error", err)
		}
	}()
	defer adminSrv.Close()

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	go store.Run(runCtx) //nolint:errcheck // returns nil when canceled
	if ag != nil {
		go ag.Run(runCtx)
	}
	go plaintext.Run(runCtx)
	if reporter != nil {
		go reporter.Run(runCtx)
	}

	select {
	case <-store.ReadyC():
	case <-ctx.Done():
		log.Info("stopped before a certificate was loaded")
		return nil
	}
	if files != nil {
		// Written before /readyz says ready, so the app starts with its files.
		if err := files.Sync(runCtx); err != nil {
			log.Warn("app certificate files", "error", err)
		}
		go files.Run(runCtx)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = px.Serve()
	}()
	if redirect != nil {
		go func() {
			if err := redirect.Serve(); err != nil {
				log.Error("redirect listener stopped", "error", err)
			}
		}()
	}
	serving.Store(true)
	log.Info("serving", "inbound", len(cfg.Inbound), "outbound", len(cfg.Outbound), "mode", cfg.Mode, "admin", adminLn.Addr().String())

	<-ctx.Done()
	serving.Store(false)
	log.Info("draining", "open_connections", px.Open(), "drain_timeout", cfg.DrainTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if redirect != nil {
		_ = redirect.Shutdown(dctx)
	}
	if err := px.Shutdown(dctx); err != nil {
		log.Warn("drain timed out; remaining connections were closed")
	}
	<-served
	log.Info("stopped")
	return nil
}

// newAppCertWriter is the writer of app-owned certificate files, nil
// without --app-cert-dir.
func newAppCertWriter(cfg *options.Config, store *certs.Store, rep *report.Reporter, log *slog.Logger, reg *metrics.Registry) (*appcerts.Writer, error) {
	ac := cfg.AppCerts
	if ac == nil {
		return nil, nil
	}
	var ext string
	if len(cfg.ExternalCertDirs) > 0 {
		ext = cfg.ExternalCertDirs[0]
	}
	return appcerts.New(appcerts.Config{
		Dir: ac.Dir, Sources: ac.Sources, ExternalDir: ext, Formats: ac.Formats, PKCS12: ac.PKCS12,
		PasswordFile: ac.PasswordFile, Reload: appcerts.NewReloader(ac.Reload), Store: store,
		Report: rep.Report, Poll: cfg.PollInterval, Logger: log, Registry: reg,
	})
}

// newPlaintextChecker checks the inbound target ports on the pod's IPs
// (POD_IPS, else POD_IP, from the downward API). A diagnostic never stops
// the sidecar: unusable addresses turn the check off and say why.
func newPlaintextChecker(cfg *options.Config, rep *report.Reporter, log *slog.Logger, reg *metrics.Registry) *exposure.Checker {
	c := exposure.Config{Ports: exposure.TargetPorts(cfg.Inbound), Interval: cfg.PlaintextCheck, Report: rep.Report, Logger: log, Registry: reg}
	ips, err := exposure.ParsePodIPs(os.Getenv(contract.EnvPodIP), os.Getenv(contract.EnvPodIPs))
	switch {
	case err != nil:
		c.Disabled = "env: " + err.Error()
	case cfg.PlaintextCheck == 0:
		c.Disabled = "turned off (--plaintext-check-interval 0)"
	}
	c.PodIPs = ips
	return exposure.New(c)
}

// controllerClient is an HTTP client for the controller's endpoints
// (discovery, events) at base: it authenticates with the mesh certificate
// and verifies the controller against the mesh roots, both read from the
// store on every handshake. Nil when no controller URL is known.
func controllerClient(cfg *options.Config, store *certs.Store, o tlsconfig.Options) (*http.Client, string) {
	base := cfg.Discovery()
	if base == "" {
		return nil, ""
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, "" // validated by options
	}
	tr := &http.Transport{
		TLSClientConfig:   tlsconfig.Client(store, u.Hostname(), "", o),
		ForceAttemptHTTP2: true, // every upstream's long poll on one connection
		IdleConnTimeout:   2 * time.Minute,
	}
	return &http.Client{Transport: tr}, base
}

// discoveryClient is the endpoint discovery of balanced outbound listeners,
// nil when no controller URL is known (they then dial upstreams by name).
func discoveryClient(hc *http.Client, base string, log *slog.Logger, reg *metrics.Registry) proxy.Discoverer {
	if hc == nil {
		return nil
	}
	c := &discover.Client{BaseURL: base, HTTP: hc, Logger: log, Registry: reg}
	c.Init()
	return c
}

// newReporter sends Events about the pod (POD_NAME) to the controller;
// nil without a controller URL or a pod name (outside Kubernetes).
func newReporter(hc *http.Client, base string, log *slog.Logger) *report.Reporter {
	pod := os.Getenv("POD_NAME")
	if hc == nil || pod == "" {
		return nil
	}
	return report.New(base, pod, hc, log)
}
