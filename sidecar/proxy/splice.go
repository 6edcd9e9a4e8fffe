package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podtls/podtls/sidecar/metrics"
)

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// activity is the last time either direction moved bytes; a connection is
// idle only when both directions are.
type activity struct{ last atomic.Int64 }

func (a *activity) touch(now time.Time) { a.last.Store(now.UnixNano()) }
func (a *activity) since(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, a.last.Load()))
}

type closeWriter interface{ CloseWrite() error }

// splice copies both ways between the downstream client and the upstream
// until both directions ended. EOF on one side half-closes the other, so
// protocols that shut down one direction first keep working. target names
// the upstream in the access log (the configured TARGET or HOST:PORT).
func (p *Proxy) splice(direction, target string, client, upstream net.Conn) {
	start := time.Now()
	var act activity
	act.touch(start)
	var first atomic.Pointer[error] // the failure that ended the connection
	fail := func(err error) {
		first.CompareAndSwap(nil, &err)
		abort(client, upstream)
	}
	var received int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if received, err = p.copy(upstream, client, p.m.received.With(direction), &act); err != nil {
			fail(err)
		}
	}()
	sent, err := p.copy(client, upstream, p.m.sent.With(direction), &act)
	if err != nil {
		fail(err)
	}
	<-done
	if p.obs.log != nil {
		var cause error
		if e := first.Load(); e != nil {
			cause = *e
		}
		p.obs.logConn(connRecord{direction: direction, target: target, client: client, upstream: upstream,
			start: start, received: received, sent: sent, cause: cause, shutdown: p.ctx.Err() != nil})
	}
}

// abort closes both sockets so the copy in the other direction returns at
// once (a reset client must not leave its app connection open). It closes
// the TCP connections under TLS: tls.Conn.Close would try to send an alert
// and could block behind a stuck write.
func abort(conns ...net.Conn) {
	for _, c := range conns {
		if tc, ok := c.(*tls.Conn); ok {
			tc.NetConn().Close()
			continue
		}
		c.Close()
	}
}

// copy moves bytes from src to dst until EOF, an error or the idle timeout,
// and returns how many it moved.
func (p *Proxy) copy(dst, src net.Conn, counter *metrics.Counter, act *activity) (int64, error) {
	var total int64
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	idle := p.cfg.IdleTimeout
	var armed time.Time
	for {
		now := time.Now()
		// Re-arm the deadline only now and then: one timer update per read
		// would cost more than the check.
		if now.Sub(armed) > idle/8 {
			_ = src.SetReadDeadline(now.Add(idle))
			armed = now
		}
		n, err := src.Read(buf)
		if n > 0 {
			act.touch(now)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, fmt.Errorf("write: %w", werr)
			}
			counter.Add(uint64(n))
			total += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(closeWriter); ok {
					_ = cw.CloseWrite()
				}
				return total, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && act.since(time.Now()) < idle {
				armed = time.Time{}
				continue // the other direction is busy
			}
			return total, fmt.Errorf("read: %w", err)
		}
	}
}
