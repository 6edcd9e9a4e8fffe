package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/podtls/podtls/tlsconfig"
)

// connRecord is one spliced (tcp) connection at its close.
type connRecord struct {
	direction, target string
	client, upstream  net.Conn
	start             time.Time
	received, sent    int64 // from and to the client
	cause             error // the failure that ended it; nil: both sides closed
	shutdown          bool  // the sidecar closed it at the end of a drain
}

// Close reasons of the connection lines of the access log.
const (
	closeClosed   = "closed"       // both sides ended their stream
	closeIdle     = "idle_timeout" // no bytes either way for --idle-timeout
	closeShutdown = "shutdown"     // still open when the drain ended
	closeError    = "error"        // a read or write failed (reset, broken pipe)
)

// logConn writes the access log line of a spliced connection. The peer is
// the client's SPIFFE ID inbound, the upstream's outbound ("" for tls://
// upstreams outside the mesh).
func (o *observer) logConn(c connRecord) {
	peerConn := c.client
	if c.direction == dirOutbound {
		peerConn = c.upstream
	}
	reason := closeClosed
	switch {
	case c.shutdown:
		reason = closeShutdown
	case errors.Is(c.cause, os.ErrDeadlineExceeded):
		reason = closeIdle
	case c.cause != nil:
		reason = closeError
	}
	attrs := []slog.Attr{
		slog.String("direction", c.direction),
		slog.String("peer", connPeer(peerConn)),
		slog.String("remote", c.client.RemoteAddr().String()),
		slog.String("upstream", c.target),
		slog.Float64("duration_ms", millis(time.Since(c.start))),
		slog.Int64("bytes_in", c.received),
		slog.Int64("bytes_out", c.sent),
		slog.String("close_reason", reason),
	}
	if reason == closeError {
		attrs = append(attrs, slog.String("error", c.cause.Error()))
	}
	o.log.LogAttrs(context.Background(), slog.LevelInfo, "connection", attrs...)
}

// connPeer is the SPIFFE ID the TLS connection c verified, "" if none.
func connPeer(c net.Conn) string {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ""
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	id, err := tlsconfig.SPIFFEID(certs[0])
	if err != nil {
		return ""
	}
	return id
}
