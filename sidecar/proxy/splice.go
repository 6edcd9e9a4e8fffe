package proxy

import (
	"errors"
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
// protocols that shut down one direction first keep working.
func (p *Proxy) splice(direction string, client, upstream net.Conn) {
	var act activity
	act.touch(time.Now())
	errc := make(chan error, 1)
	go func() {
		errc <- p.copy(upstream, client, p.m.received.With(direction), &act)
	}()
	err1 := p.copy(client, upstream, p.m.sent.With(direction), &act)
	if err1 != nil {
		// Unblock the other direction.
		client.Close()
		upstream.Close()
	}
	err2 := <-errc
	if err2 != nil && err1 == nil {
		client.Close()
		upstream.Close()
	}
}

func (p *Proxy) copy(dst, src net.Conn, counter *metrics.Counter, act *activity) error {
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
				return werr
			}
			counter.Add(uint64(n))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(closeWriter); ok {
					_ = cw.CloseWrite()
				}
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && act.since(time.Now()) < idle {
				armed = time.Time{}
				continue // the other direction is busy
			}
			return err
		}
	}
}
