package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podtls/podtls/sidecar/balance"
	"github.com/podtls/podtls/tlsconfig"
)

// Discoverer feeds the endpoints of upstreams to balanced outbound listeners
// (the sidecar's discovery client). Watch calls update with the HOST:PORT
// of the upstream's endpoints whenever they change, until ctx ends; nil
// means the set is unknown (not a Service of the cluster, discovery down):
// requests then go to the upstream's own address, as in tcp mode.
type Discoverer interface {
	Watch(ctx context.Context, upstream string, update func(addrs []string))
}

// maxAttempts bounds the endpoints one request tries: a connect failure
// (nothing was sent) moves it to another endpoint.
const maxAttempts = 3

// balancedUpstream forwards the requests of one outbound listener, each to
// the endpoint the balancer picks, over pooled mTLS connections (h2 where
// the upstream offers it, HTTP/1.1 otherwise).
type balancedUpstream struct {
	p   *Proxy
	o   *Outbound
	bal *balance.Balancer
	// h2 carries every request; h1 the upgrades (WebSockets), which need
	// an HTTP/1.1 connection of their own.
	h2, h1 *http.Transport
	rp     *httputil.ReverseProxy
}

// connectError is a request that never reached an endpoint: safe to retry.
type connectError struct {
	failure
	addr string
}

func (e *connectError) Error() string {
	return fmt.Sprintf("connect to %s: %s: %v", e.addr, e.reason, e.err)
}
func (e *connectError) Unwrap() error { return e.err }

func (p *Proxy) newBalancedUpstream(o *Outbound, clientTLS *tls.Config) *balancedUpstream {
	u := &balancedUpstream{p: p, o: o, bal: balance.New(o.Upstream, p.cfg.Balance)}
	u.h2 = u.transport(clientTLS, []string{"h2", "http/1.1"})
	u.h1 = u.transport(clientTLS, []string{"http/1.1"})
	u.rp = &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		Transport:      u,
		BufferPool:     bytePool{},
		FlushInterval:  -1, // streams (gRPC, server-sent events) pass each write at once
		ModifyResponse: u.modifyResponse,
		ErrorHandler:   u.errorHandler,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	return u
}

func (u *balancedUpstream) transport(clientTLS *tls.Config, alpn []string) *http.Transport {
	cfg := clientTLS.Clone() // shares the session cache and the verification
	cfg.NextProtos = alpn
	h2 := &http.HTTP2Config{
		// A peer that vanished (a pod killed, a node gone) is noticed by
		// pings, not by the next request hanging.
		SendPingTimeout: 10 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	return &http.Transport{
		DialTLSContext:        func(ctx context.Context, _, addr string) (net.Conn, error) { return u.dial(ctx, addr, cfg) },
		ForceAttemptHTTP2:     len(alpn) > 1,
		HTTP2:                 h2,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
}

// dial connects to one endpoint and completes the mTLS handshake: the
// upstream's chain, its name (the upstream host, whatever address the
// endpoint has) and its pinned identity are verified as in tcp mode.
func (u *balancedUpstream) dial(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
	p := u.p
	raw, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		p.m.dialFailures.With(dirOutbound).Inc()
		return nil, &connectError{failure: classifyDial(err), addr: addr}
	}
	if !p.track(raw) {
		raw.Close()
		return nil, &connectError{failure: failure{reason: "shutting_down", status: http.StatusServiceUnavailable, err: errors.New("the sidecar is shutting down")}, addr: addr}
	}
	tc := tls.Client(&untrackOnClose{Conn: raw, p: p}, cfg)
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		p.handshakeFailed(dirOutbound, err, raw.RemoteAddr())
		tc.Close()
		return nil, &connectError{failure: failure{reason: handshakeReason(err), status: handshakeStatus(err), err: err}, addr: addr}
	}
	p.handshakeDone(dirOutbound, tc)
	return tc, nil
}

// untrackOnClose drops a pooled upstream connection from the forced-close
// set when the transport closes it.
type untrackOnClose struct {
	net.Conn
	p    *Proxy
	once sync.Once
}

func (c *untrackOnClose) Close() error {
	c.once.Do(func() { c.p.untrack(c.Conn) })
	return c.Conn.Close()
}

func (u *balancedUpstream) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "https"
	pr.Out.URL.Host = u.o.Upstream // the endpoint is set per attempt in RoundTrip
	// An app calling its loopback listener names it in Host; the upstream
	// gets its own name instead. Any other Host (virtual hosting) stays.
	if isLoopbackHost(pr.In.Host) {
		pr.Out.Host = u.o.Upstream
	}
	if strings.EqualFold(pr.Out.Header.Get("Upgrade"), "h2c") {
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
	}
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") || host == "" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// RoundTrip sends req to the endpoint the balancer picks, and to another
// one when the connection could not be made (up to maxAttempts); anything
// that failed after the request left is the app's to see, unless the
// upstream allows retries and req is idempotent without a body. With a
// timeout, the response headers must arrive in time (504 otherwise).
func (u *balancedUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if u.o.Timeout <= 0 {
		return u.roundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	var settled atomic.Bool // headers in, or timed out: whichever comes first
	timer := time.AfterFunc(u.o.Timeout, func() {
		if settled.CompareAndSwap(false, true) {
			cancel(errResponseTimeout)
		}
	})
	res, err := u.roundTrip(req.WithContext(ctx))
	if !settled.CompareAndSwap(false, true) {
		if res != nil {
			res.Body.Close()
		}
		cancel(nil)
		return nil, &answerError{failure{reason: "response_timeout", status: http.StatusGatewayTimeout,
			err: fmt.Errorf("no response headers within %s", u.o.Timeout)}}
	}
	timer.Stop()
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		// An upgraded connection ends with the app's request instead.
		res.Body = &doneBody{ReadCloser: res.Body, done: func() { cancel(nil) }}
	}
	return res, nil
}

var errResponseTimeout = errors.New("response timeout")

// answerError is a request that failed in a way the sidecar answers with
// its own status (a timeout): counted and answered by errorHandler.
type answerError struct{ failure }

func (e *answerError) Error() string { return fmt.Sprintf("%s: %v", e.reason, e.err) }
func (e *answerError) Unwrap() error { return e.err }

func (u *balancedUpstream) roundTrip(req *http.Request) (*http.Response, error) {
	t := u.h2
	if req.Header.Get("Upgrade") != "" {
		t = u.h1
	}
	var body *replayBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &replayBody{ReadCloser: req.Body}
	}
	retries := 0
	if body == nil && idempotent(req.Method) && req.Header.Get("Upgrade") == "" {
		retries = u.o.Retries
	}
	var tried []string
	var lastErr error
	for connects := 0; connects < maxAttempts; {
		pick, err := u.bal.Pick(tried...)
		if errors.Is(err, balance.ErrNoEndpoints) && lastErr != nil && !isConnectError(lastErr) {
			pick, err = u.bal.Pick() // a retry after an answer may go back to an endpoint tried
		}
		if err != nil {
			body.closeUnderlying()
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, &connectError{failure: failure{reason: "no_endpoints", status: http.StatusServiceUnavailable, err: err}, addr: u.o.Upstream}
		}
		out := req.WithContext(req.Context())
		url := *req.URL
		url.Host = pick.Addr
		out.URL = &url
		if body != nil {
			out.Body = body
		}
		// The latency fed to the balancer counts from the moment a
		// connection is in hand: a dial and handshake are not the endpoint's
		// answer time.
		var start time.Time
		out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { start = time.Now() },
		}))
		res, err := t.RoundTrip(out)
		tried = append(tried, pick.Addr)
		if err == nil {
			rtt := time.Since(start)
			if retries > 0 && retryableStatus(res.StatusCode) && req.Context().Err() == nil {
				retries--
				pick.Done(rtt)
				_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
				res.Body.Close()
				u.p.m.outFailures.With(u.o.Upstream, "retried_status").Inc()
				lastErr = fmt.Errorf("endpoint %s answered %s", pick.Addr, res.Status)
				continue
			}
			body.handOver()
			if res.StatusCode == http.StatusSwitchingProtocols {
				pick.Done(rtt)
			} else {
				res.Body = &doneBody{ReadCloser: res.Body, done: func() { pick.Done(rtt) }}
			}
			return res, nil
		}
		var ce *connectError
		if !errors.As(err, &ce) {
			pick.Release()
			if retries > 0 && req.Context().Err() == nil {
				retries--
				u.p.m.outFailures.With(u.o.Upstream, "retried_error").Inc()
				u.p.log.Warn("upstream request failed, retrying", "upstream", u.o.Upstream, "endpoint", pick.Addr, "method", req.Method, "error", err)
				lastErr = err
				continue
			}
			body.closeUnderlying()
			return nil, err
		}
		connects++
		pick.Failed()
		u.p.m.outFailures.With(u.o.Upstream, ce.reason).Inc()
		u.p.log.Warn("upstream endpoint unavailable", "upstream", u.o.Upstream, "endpoint", pick.Addr, "reason", ce.reason, "error", ce.err)
		lastErr = err
		if body != nil && body.started() {
			body.closeUnderlying()
			return nil, err
		}
	}
	body.closeUnderlying()
	return nil, lastErr
}

func isConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// idempotent reports whether RFC 9110 calls method idempotent: sending such
// a request twice has the effect of sending it once.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// retryableStatus: the endpoint could not serve the request now (a
// gateway's failure, overload or drain), so another one may.
func retryableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

func (u *balancedUpstream) modifyResponse(res *http.Response) error {
	if res.TLS != nil && len(res.TLS.PeerCertificates) > 0 {
		if id, err := tlsconfig.SPIFFEID(res.TLS.PeerCertificates[0]); err == nil {
			notePeer(res.Request.Context(), id)
		}
	}
	return grpcTrailersOnly(res)
}

// errorHandler answers a request that got no response: the same status,
// headers and reasons as a tcp-mode http answer (see outboundFailed).
func (u *balancedUpstream) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		u.p.log.Debug("request canceled by the app", "upstream", u.o.Upstream, "error", err)
		return
	}
	f := failure{reason: "upstream_error", status: http.StatusBadGateway, err: err}
	var ce *connectError
	var ae *answerError
	switch {
	case errors.As(err, &ce):
		f = ce.failure
		if f.reason == "no_endpoints" {
			u.p.m.outFailures.With(u.o.Upstream, f.reason).Inc()
		}
	case errors.As(err, &ae):
		f = ae.failure
		u.p.m.outFailures.With(u.o.Upstream, f.reason).Inc()
		u.p.log.Warn("upstream request failed", "upstream", u.o.Upstream, "method", r.Method, "reason", f.reason, "error", f.err)
	default:
		u.p.m.outFailures.With(u.o.Upstream, f.reason).Inc()
		u.p.log.Warn("upstream request failed", "upstream", u.o.Upstream, "method", r.Method, "error", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set(ErrorHeader, f.reason)
	h.Set(UpstreamHeader, u.o.Upstream)
	w.WriteHeader(f.status)
	_, _ = fmt.Fprintf(w, "podtls: upstream %s unavailable (%s): %v\n", u.o.Upstream, f.reason, f.err)
}

// closeIdle drops the pooled upstream connections (shutdown).
func (u *balancedUpstream) closeIdle() {
	u.h2.CloseIdleConnections()
	u.h1.CloseIdleConnections()
}

// newOutboundHTTPServer is the app-facing server of a balanced outbound
// listener: plaintext HTTP/1.1 and h2c with prior knowledge (gRPC) on
// loopback, each request handed to u.
func (p *Proxy) newOutboundHTTPServer(u *balancedUpstream) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           p.observe(dirOutbound, u.o.Upstream, u.rp),
		Protocols:         &protos,
		ReadHeaderTimeout: p.cfg.HandshakeTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnState:         p.watchHijacked,
		BaseContext:       func(net.Listener) context.Context { return p.ctx },
	}
}

// handleOutboundHTTP hands an app connection to its listener's HTTP server;
// like handleInboundHTTP, it holds a count on p.wg until the connection closes.
func (p *Proxy) handleOutboundHTTP(l *listener, raw net.Conn) {
	p.wg.Add(1) // the caller's count is held: never from zero during Wait
	owned := &ownedConn{Conn: raw, release: func() {
		p.connDone(dirOutbound, raw)
		p.wg.Done()
	}}
	if !l.httpLn.push(owned) {
		owned.Close()
	}
}

// outboundListeners wraps the sockets bound for o: balanced listeners share
// one upstream (balancer, connection pools) and each has an HTTP server;
// the others splice, with one TLS session cache per upstream either way.
func (p *Proxy) outboundListeners(o *Outbound, lns []net.Listener) []*listener {
	clientTLS := p.cfg.ClientTLS(*o)
	var u *balancedUpstream
	if o.Balanced(p.cfg.Mode) {
		u = p.newBalancedUpstream(o, clientTLS)
	}
	out := make([]*listener, 0, len(lns))
	for _, ln := range lns {
		l := &listener{ln: ln, direction: dirOutbound, outbound: o, clientTLS: clientTLS, balanced: u}
		if u != nil {
			l.httpLn = newChanListener(ln.Addr())
			l.http = p.newOutboundHTTPServer(u)
		}
		out = append(out, l)
	}
	return out
}

// startDiscovery feeds each balanced mesh upstream's endpoints from the
// Discoverer until the proxy is closed. Upstreams outside the mesh (tls://)
// are dialed by name.
func (p *Proxy) startDiscovery() {
	if p.cfg.Discovery == nil {
		return
	}
	seen := map[*balancedUpstream]bool{}
	for _, l := range p.listeners {
		u := l.balanced
		if u == nil || seen[u] || u.o.Public {
			continue
		}
		seen[u] = true
		go p.cfg.Discovery.Watch(p.ctx, u.o.Upstream, u.bal.Update)
	}
}
