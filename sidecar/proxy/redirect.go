package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/sidecar/metrics"
)

// Redirect is the plaintext listener that sends every request to https: 308
// Permanent Redirect (method and body kept, for any method) to
// https://HOST[:HTTPSPort]/path?query when HOST is one of Hosts (wildcards
// "*.example.com" match exactly one label); any other Host, an IP literal
// included, gets 421 Misdirected Request and no Location, so the listener
// never redirects to a name the pod does not serve.
type Redirect struct {
	Listen    string   // host:port, host may be empty (all addresses)
	HTTPSPort int      // the port clients reach the TLS listener on; 443 is left out of the URL
	Hosts     []string // names served by SNI; "*.example.com" allowed
}

// Redirector serves a Redirect.
type Redirector struct {
	cfg    Redirect
	log    *slog.Logger
	ln     net.Listener
	srv    *http.Server
	result *metrics.CounterVec
}

// NewRedirector validates r; Listen binds its port. log and reg may be nil.
func NewRedirector(r Redirect, log *slog.Logger, reg *metrics.Registry) (*Redirector, error) {
	if r.HTTPSPort < 1 || r.HTTPSPort > 65535 {
		return nil, fmt.Errorf("redirect: https port %d: want 1-65535", r.HTTPSPort)
	}
	if len(r.Hosts) == 0 {
		return nil, errors.New("redirect: no host names to redirect to")
	}
	hosts := make([]string, 0, len(r.Hosts))
	for _, h := range r.Hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		if err := identity.ValidateDNSName(strings.TrimPrefix(h, "*.")); err != nil {
			return nil, fmt.Errorf("redirect: host %q: %w", h, err)
		}
		hosts = append(hosts, h)
	}
	r.Hosts = hosts
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	rd := &Redirector{cfg: r, log: log.With("component", "redirect"),
		result: reg.NewCounterVec("podtls_sidecar_redirects_total", "Requests on the plaintext redirect port: redirected to https, or misdirected (unknown host, 421).", "result")}
	rd.srv = &http.Server{
		Handler:           rd,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(rd.log.Handler(), slog.LevelDebug),
	}
	return rd, nil
}

// Listen binds the plaintext port.
func (rd *Redirector) Listen() error {
	ln, err := net.Listen("tcp", rd.cfg.Listen)
	if err != nil {
		return fmt.Errorf("--redirect %s: %w", rd.cfg.Listen, err)
	}
	rd.ln = ln
	return nil
}

// Addr is the bound address.
func (rd *Redirector) Addr() net.Addr { return rd.ln.Addr() }

// Serve answers requests until Shutdown.
func (rd *Redirector) Serve() error {
	if err := rd.srv.Serve(rd.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("redirect %s: %w", rd.cfg.Listen, err)
	}
	return nil
}

// Shutdown stops accepting and waits for requests in flight until ctx ends.
func (rd *Redirector) Shutdown(ctx context.Context) error { return rd.srv.Shutdown(ctx) }

func (rd *Redirector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	loc, ok := rd.cfg.location(r.Host, r.URL.RequestURI())
	if !ok {
		rd.result.With("misdirected").Inc()
		rd.log.Debug("redirect refused: unknown host", "host", r.Host, "remote", r.RemoteAddr)
		http.Error(w, "misdirected request: this host is not served here", http.StatusMisdirectedRequest)
		return
	}
	rd.result.With("redirected").Inc()
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusPermanentRedirect)
}

// location is the https URL for a request to host (as in the Host header,
// with or without port) and target (path and query); false when host is
// not one of r.Hosts.
func (r Redirect) location(host, target string) (string, bool) {
	name := host
	if strings.HasPrefix(name, "[") {
		return "", false // an IP literal is never one of our names
	}
	if strings.Contains(name, ":") {
		h, port, err := net.SplitHostPort(name)
		if err != nil {
			return "", false
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil && port != "" {
			return "", false
		}
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if !r.known(name) {
		return "", false
	}
	if !strings.HasPrefix(target, "/") {
		target = "/" + strings.TrimPrefix(target, "*")
	}
	if r.HTTPSPort != 443 {
		name = net.JoinHostPort(name, strconv.Itoa(r.HTTPSPort))
	}
	return "https://" + name + target, true
}

// known reports whether name (lower case, no port) is one of r.Hosts.
func (r Redirect) known(name string) bool {
	if identity.ValidateDNSName(name) != nil {
		return false
	}
	_, parent, hasParent := strings.Cut(name, ".")
	for _, h := range r.Hosts {
		if h == name || (hasParent && strings.HasPrefix(h, "*.") && h[2:] == parent) {
			return true
		}
	}
	return false
}
