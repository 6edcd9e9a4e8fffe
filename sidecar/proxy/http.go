package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
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
		// The app speaks plaintext HTTP/1.1 on loopback; h2 ends here.
		ForceAttemptHTTP2: false,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the app sees the name the client asked for
			p.setForwarded(pr)
		},
		Transport:  transport,
		BufferPool: bytePool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.m.dialFailures.With(dirInbound).Inc()
			p.log.Warn("proxy to app failed", "target", in.Target, "method", r.Method, "error", err)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	return &http.Server{
		Handler:           rp,
		ReadHeaderTimeout: p.cfg.HandshakeTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				p.connDone(dirInbound, underlying(c))
			}
		},
		BaseContext: func(net.Listener) context.Context { return p.ctx },
	}
}

// underlying returns the TCP connection under a TLS one, the key acceptLoop tracked.
func underlying(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
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
