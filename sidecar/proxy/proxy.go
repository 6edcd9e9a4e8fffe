// Package proxy runs the sidecar's listeners: inbound TLS/mTLS termination
// forwarding plaintext to the app, and outbound plaintext-to-mTLS origination.
// TCP mode splices bytes (any protocol); HTTP mode terminates HTTP/1.1 and h2
// on inbound and adds forwarding and identity headers.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podtls/podtls/sidecar/balance"
	"github.com/podtls/podtls/sidecar/metrics"
)

// Modes.
const (
	ModeTCP  = "tcp"
	ModeHTTP = "http"
)

// Config configures a Proxy.
type Config struct {
	Inbound  []Inbound
	Outbound []Outbound
	Mode     string
	// ServerTLS builds the config terminating one inbound listener
	// (tlsconfig.Server), offering the ALPN protocols given; called once per
	// inbound listener.
	ServerTLS func(alpn []string) *tls.Config
	// ALPN is what inbound ports whose app protocol is tcp offer (--alpn);
	// the other ports offer what their protocol and the mode serve.
	ALPN []string
	// ClientTLS builds the config for one outbound (tlsconfig.Client); called
	// once per listener so each upstream keeps its own session cache.
	ClientTLS func(Outbound) *tls.Config

	HandshakeTimeout time.Duration // default 10s
	IdleTimeout      time.Duration // default 1h; no bytes either way for this long closes the connection
	DialTimeout      time.Duration // default 5s
	MaxConnections   int           // open connections over all listeners; 0 = unlimited
	// TrustedProxies are the peers whose X-Forwarded-For is kept (http mode).
	TrustedProxies []netip.Prefix
	// ProxyProtocol holds the Listen addresses of the inbound listeners whose
	// connections start with a PROXY protocol v2 header.
	ProxyProtocol map[string]bool
	// SelfID returns this sidecar's SPIFFE ID for X-Forwarded-Client-Cert.
	SelfID func() string
	// Discovery feeds balanced outbound listeners; nil: upstreams are
	// dialed by name.
	Discovery Discoverer
	// Balance tunes the per-request balancers (zero: the defaults).
	Balance balance.Options

	Logger   *slog.Logger
	Registry *metrics.Registry
	// AccessLog, when set, gets one line per HTTP mode request (observe).
	AccessLog *slog.Logger

	// listen binds listeners; tests replace it to simulate a pod without ::1.
	listen func(ctx context.Context, network, addr string) (net.Listener, error)
}

// Proxy owns the listeners and the connections they accepted.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	m      proxyMetrics
	obs    *observer
	dialer net.Dialer

	ctx    context.Context // canceled on forced close
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners []*listener
	conns     map[net.Conn]struct{}
	closing   bool
	wg        sync.WaitGroup
	open      atomic.Int64
	// rejectLog rate-limits the warning of refusals at --max-connections.
	rejectLog rejectLog
}

type listener struct {
	ln        net.Listener
	direction string
	inbound   *Inbound
	outbound  *Outbound
	clientTLS *tls.Config
	serverTLS *tls.Config
	http      *http.Server
	httpLn    *chanListener
	balanced  *balancedUpstream // outbound http: per-request balancing
}

type proxyMetrics struct {
	active               *metrics.GaugeVec
	totalC               *metrics.CounterVec
	handshakes, failures *metrics.CounterVec
	received, sent       *metrics.CounterVec
	dialFailures         *metrics.CounterVec
	rejected             *metrics.CounterVec
	outFailures          *metrics.CounterVec
}

const (
	dirInbound  = "inbound"
	dirOutbound = "outbound"
)

// New validates cfg and prepares a Proxy; Listen binds the ports. A proxy
// without listeners serves nothing (a sidecar that only writes app-owned
// certificate files).
func New(cfg Config) (*Proxy, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeTCP
	}
	if cfg.Mode != ModeTCP && cfg.Mode != ModeHTTP {
		return nil, fmt.Errorf("proxy: mode %q: want tcp or http", cfg.Mode)
	}
	if len(cfg.Inbound) > 0 && cfg.ServerTLS == nil {
		return nil, errors.New("proxy: inbound listeners need ServerTLS")
	}
	if len(cfg.Outbound) > 0 && cfg.ClientTLS == nil {
		return nil, errors.New("proxy: outbound listeners need ClientTLS")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = metrics.NewRegistry()
	}
	if cfg.listen == nil {
		var lc net.ListenConfig
		cfg.listen = lc.Listen
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg: cfg, log: cfg.Logger.With("component", "proxy"),
		dialer: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		ctx:    ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{},
	}
	r := cfg.Registry
	p.m = proxyMetrics{
		active:       r.NewGaugeVec("podtls_sidecar_connections_active", "Open client connections by direction.", "direction"),
		totalC:       r.NewCounterVec("podtls_sidecar_connections_total", "Accepted client connections by direction.", "direction"),
		handshakes:   r.NewCounterVec("podtls_sidecar_handshakes_total", "Completed TLS handshakes by direction and whether the session was resumed.", "direction", "resumed"),
		failures:     r.NewCounterVec("podtls_sidecar_handshake_failures_total", "Failed or refused TLS handshakes by direction and reason.", "direction", "reason"),
		received:     r.NewCounterVec("podtls_sidecar_received_bytes_total", "Bytes read from downstream clients (and forwarded), by direction.", "direction"),
		sent:         r.NewCounterVec("podtls_sidecar_sent_bytes_total", "Bytes written to downstream clients, by direction.", "direction"),
		dialFailures: r.NewCounterVec("podtls_sidecar_upstream_dial_failures_total", "Failed dials to the app (inbound) or the upstream (outbound).", "direction"),
		rejected:     r.NewCounterVec("podtls_sidecar_connections_rejected_total", "Connections closed at accept, by reason.", "reason"),
		outFailures:  r.NewCounterVec("podtls_sidecar_outbound_failures_total", "App connections that could not be forwarded to their upstream (dial or TLS failure), by upstream and reason.", "upstream", "reason"),
	}
	p.obs = newObserver(r, cfg.AccessLog)
	return p, nil
}

// Listen binds every listener, so address errors surface before serving.
func (p *Proxy) Listen() error {
	for i := range p.cfg.Inbound {
		in := &p.cfg.Inbound[i]
		// ":PORT" is one dual-stack socket: every IPv4 and IPv6 address of the pod.
		ln, err := p.cfg.listen(context.Background(), "tcp", in.Listen)
		if err != nil {
			p.closeListeners()
			return fmt.Errorf("--inbound %s: %w", in, err)
		}
		if p.cfg.ProxyProtocol[in.Listen] {
			ln = p.withProxyProtocol(ln)
		}
		l := &listener{ln: ln, direction: dirInbound, inbound: in,
			serverTLS: p.cfg.ServerTLS(in.alpn(p.cfg.Mode, p.cfg.ALPN))}
		if in.servesHTTP(p.cfg.Mode) {
			l.httpLn = newChanListener(ln.Addr())
			l.http = p.newHTTPServer(in)
		}
		p.listeners = append(p.listeners, l)
	}
	for i := range p.cfg.Outbound {
		o := &p.cfg.Outbound[i]
		lns, err := p.bindOutbound(o)
		if err != nil {
			p.closeListeners()
			return fmt.Errorf("--outbound %s: %w", o, err)
		}
		p.listeners = append(p.listeners, p.outboundListeners(o, lns)...)
	}
	return nil
}

// Addrs returns the bound addresses, inbound listeners first.
func (p *Proxy) Addrs() []net.Addr {
	var out []net.Addr
	for _, l := range p.listeners {
		out = append(out, l.ln.Addr())
	}
	return out
}

// Serve accepts on every listener until Shutdown; it returns once all accept
// loops have stopped.
func (p *Proxy) Serve() error {
	p.startDiscovery()
	var wg sync.WaitGroup
	for _, l := range p.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.acceptLoop(l)
		}()
		if l.http != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.http.Serve(l.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
					p.log.Error("http server stopped", "listen", l.ln.Addr().String(), "error", err)
				}
			}()
		}
	}
	wg.Wait()
	return nil
}

func (p *Proxy) acceptLoop(l *listener) {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: wait instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "listen", l.ln.Addr().String(), "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if limit := p.cfg.MaxConnections; limit > 0 && p.open.Load() >= int64(limit) {
			p.m.rejected.With("max_connections").Inc()
			c.Close()
			if n, ok := p.rejectLog.due(time.Now()); ok {
				p.log.Warn("connection refused: at --max-connections", "limit", limit, "listen", l.ln.Addr().String(),
					"refused_since_last_log", n, "metric", `podtls_sidecar_connections_rejected_total{reason="max_connections"}`)
			}
			continue
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.open.Add(1)
		p.m.active.With(l.direction).Inc()
		p.m.totalC.With(l.direction).Inc()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			switch {
			case l.direction == dirInbound:
				p.handleInbound(l, c)
			case l.balanced != nil:
				p.handleOutboundHTTP(l, c)
			default:
				p.handleOutbound(l, c)
			}
		}()
	}
}

// connDone balances the accounting of acceptLoop.
func (p *Proxy) connDone(direction string, c net.Conn) {
	p.untrack(c)
	c.Close()
	p.open.Add(-1)
	p.m.active.With(direction).Dec()
}

func (p *Proxy) handshakeFailed(direction string, err error, remote net.Addr) {
	reason := failureReason(err)
	p.m.failures.With(direction, reason).Inc()
	p.log.Debug("tls handshake failed", "direction", direction, "remote", remote.String(), "reason", reason, "error", err)
}

func (p *Proxy) handshakeDone(direction string, tc *tls.Conn) {
	if tc.ConnectionState().DidResume {
		p.m.handshakes.With(direction, "true").Inc()
	} else {
		p.m.handshakes.With(direction, "false").Inc()
	}
}

func (p *Proxy) handleInbound(l *listener, raw net.Conn) {
	if l.http != nil {
		p.handleInboundHTTP(l, raw)
		return
	}
	tc, ok := p.serverHandshake(l, raw, raw)
	if !ok {
		p.connDone(dirInbound, raw)
		return
	}
	defer p.connDone(dirInbound, raw)
	// Only now, with the peer verified, does the app see a connection.
	up, err := p.dialApp(p.ctx, l.inbound.Target)
	if err != nil {
		p.m.dialFailures.With(dirInbound).Inc()
		p.log.Warn("dial app failed", "target", l.inbound.Target, "error", err)
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer func() { p.untrack(up); up.Close() }()
	p.splice(dirInbound, l.inbound.Target, tc, up)
}

// serverHandshake runs the inbound TLS handshake over conn (raw, or a
// wrapper of it) and counts its outcome.
func (p *Proxy) serverHandshake(l *listener, raw, conn net.Conn) (*tls.Conn, bool) {
	tc := tls.Server(conn, l.serverTLS)
	// Handshake, not HandshakeContext: the deadline bounds it, a forced
	// shutdown closes the socket, and a context would cost a goroutine per
	// connection.
	_ = raw.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		p.handshakeFailed(dirInbound, err, raw.RemoteAddr())
		return nil, false
	}
	_ = raw.SetDeadline(time.Time{})
	p.handshakeDone(dirInbound, tc)
	return tc, true
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing && p.ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) closeListeners() {
	for _, l := range p.listeners {
		l.ln.Close()
		if l.httpLn != nil {
			l.httpLn.Close()
		}
	}
}

// Open reports the number of open client connections.
func (p *Proxy) Open() int64 { return p.open.Load() }

// Shutdown stops accepting, lets open connections finish until ctx ends, then
// closes whatever is left. It returns ctx's error if it had to force.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.closeListeners()
	for _, l := range p.listeners {
		if l.http != nil {
			go l.http.Shutdown(ctx) //nolint:errcheck // forced below if needed
		}
	}
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		for _, l := range p.listeners {
			if l.http != nil {
				_ = l.http.Shutdown(ctx)
			}
			if l.balanced != nil {
				l.balanced.closeIdle()
			}
		}
		close(done)
	}()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-ctx.Done():
	}
	p.log.Warn("drain timeout: closing open connections", "open", p.open.Load())
	p.cancel()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	for _, l := range p.listeners {
		if l.http != nil {
			l.http.Close()
		}
	}
	<-done
	return ctx.Err()
}
