package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ClientIDHeader carries the verified client SPIFFE ID to the app in HTTP
// mode. Any copy sent by the client is removed first.
const ClientIDHeader = "X-Podtls-Client-Id"

// newHTTPServer builds the HTTP mode server of one inbound listener. The
// accept loop hands it connections whose TLS handshake (and identity check)
// already succeeded, so the handshake accounting is the same in both modes.
func (p *Proxy) newHTTPServer(in *Inbound) *http.Server {
	target := &url.URL{Scheme: "http", Host: in.Target}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return p.dialApp(ctx, addr)
		},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024, // one app behind us: keep every warm connection
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // pass the app's encoding through untouched
		ExpectContinueTimeout: time.Second,
		// The app speaks plaintext HTTP/1.1 on loopback (h2 ends here), or,
		// for h2c ports, plaintext HTTP/2 (below).
		ForceAttemptHTTP2: false,
	}
	h2c := in.appProtocol(ModeHTTP) == ProtoH2C
	if h2c {
		// Prior-knowledge HTTP/2 to the app: gRPC and HTTP/2 apps. Upgrade
		// requests cannot cross it (HTTP/1.1 only) and get 502.
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		transport.Protocols = &protos
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the app sees the name the client asked for
			p.setForwarded(pr)
			// Upgrades pass through (WebSockets and others), except h2c: it
			// is for cleartext connections, and the client's connection
			// to us is TLS (h2 there is negotiated by ALPN).
			if strings.EqualFold(pr.Out.Header.Get("Upgrade"), "h2c") {
				pr.Out.Header.Del("Upgrade")
				pr.Out.Header.Del("Connection")
			}
		},
		Transport:  transport,
		BufferPool: bytePool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away (h2: reset its stream) and the upstream
				// request was canceled with it: not the app's failure.
				p.log.Debug("request canceled by the client", "target", in.Target, "method", r.Method, "error", err)
				return
			}
			p.m.dialFailures.With(dirInbound).Inc()
			p.log.Warn("proxy to app failed", "target", in.Target, "method", r.Method, "error", err)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	if h2c {
		// Streams (gRPC) flush every write at once in both directions.
		rp.FlushInterval = -1
		rp.ModifyResponse = grpcTrailersOnly
	}
	return &http.Server{
		Handler:           p.observe(dirInbound, in.Target, rp),
		ReadHeaderTimeout: p.cfg.HandshakeTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		// The accounting is balanced when the connection is closed (see
		// ownedConn), which also covers connections hijacked for an
		// Upgrade, closed by the ReverseProxy when either side ends. Those
		// are out of the server's timeouts: the idle timeout watches them.
		ConnState:   p.watchHijacked,
		BaseContext: func(net.Listener) context.Context { return p.ctx },
	}
}

// watchHijacked puts a connection the HTTP server hijacked for an Upgrade
// under the idle timeout: it is out of the server's own timeouts.
func (p *Proxy) watchHijacked(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if oc, ok := c.(*ownedConn); ok {
		oc.watchIdle(p.cfg.IdleTimeout)
	}
}

// handleInboundHTTP hands a handshaken connection to the listener's HTTP
// server. The connection holds a count on p.wg until it is closed, so a drain
// waits for requests in flight and upgraded (hijacked) connections alike.
func (p *Proxy) handleInboundHTTP(l *listener, raw net.Conn) {
	p.wg.Add(1) // the caller's count is held: never from zero during Wait
	owned := &ownedConn{Conn: raw, release: func() {
		p.connDone(dirInbound, raw)
		p.wg.Done()
	}}
	tc, ok := p.serverHandshake(l, raw, owned)
	if !ok {
		owned.Close()
		return
	}
	// The HTTP server owns the connection from here.
	if !l.httpLn.push(tc) {
		owned.Close()
	}
}

// ownedConn is the TCP connection under the TLS connection of an HTTP mode
// client. The http.Server needs the *tls.Conn itself (for h2 and r.TLS), so
// the accounting hooks in one level lower: whoever closes the connection
// last — the server on StateClosed, or the ReverseProxy after an Upgrade it
// hijacked — releases it, once.
type ownedConn struct {
	net.Conn
	once    sync.Once
	release func()
	act     activity // last read or write, once watchIdle started
	idle    atomic.Pointer[time.Timer]
}

func (c *ownedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.watched() {
		c.act.touch(time.Now())
	}
	return n, err
}

func (c *ownedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 && c.watched() {
		c.act.touch(time.Now())
	}
	return n, err
}

func (c *ownedConn) watched() bool { return c.act.last.Load() != 0 }

// watchIdle closes the connection once no bytes moved either way for idle
// (--idle-timeout), as in tcp mode: one timer per upgraded connection,
// re-armed for the time left when it fires early, stopped on Close.
func (c *ownedConn) watchIdle(idle time.Duration) {
	c.act.touch(time.Now())
	var t *time.Timer
	// Created disarmed and armed by Reset below, so the callback sees t set.
	t = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		if left := idle - c.act.since(time.Now()); left > 0 {
			t.Reset(left)
			return
		}
		c.Conn.Close() // the copies fail; the ReverseProxy closes us
	})
	c.idle.Store(t)
	t.Reset(idle)
}

func (c *ownedConn) Close() error {
	if t := c.idle.Load(); t != nil {
		t.Stop()
	}
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// bytePool adapts bufPool to httputil.BufferPool.
type bytePool struct{}

func (bytePool) Get() []byte  { return *(bufPool.Get().(*[]byte)) }
func (bytePool) Put(b []byte) { bufPool.Put(&b) }

// chanListener feeds handshaken connections to an http.Server.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// grpcTrailersOnly keeps a gRPC "trailers-only" answer (an error status sent as one
// HEADERS frame that ends the stream, grpc-status among the headers) valid across the
// proxy. The proxy sends the response headers before it knows the body is empty, so the
// client would see headers, then an end without trailers, and grpc-go reports Internal
// "server closed the stream without sending trailers" instead of the app's status (a
// race: seen in CI). Moving the metadata into trailers gives the client a normal
// response: empty headers, then trailers with the status and the app's metadata.
func grpcTrailersOnly(res *http.Response) error {
	if res.Header.Get("Grpc-Status") == "" || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/grpc") {
		return nil
	}
	if res.Trailer == nil {
		res.Trailer = http.Header{}
	}
	for k, vv := range res.Header {
		switch k {
		case "Content-Type", "Content-Length", "Date":
			continue
		}
		res.Trailer[k] = vv
		delete(res.Header, k)
	}
	return nil
}
