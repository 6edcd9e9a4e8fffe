package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/podtls/podtls/tlsconfig"
)

// ErrorHeader is set on the answer an http-mode outbound listener gives the
// app when the upstream cannot be reached: its value is the failure reason,
// the same label as in podtls_sidecar_outbound_failures_total.
const ErrorHeader = "X-Podtls-Error"

// UpstreamHeader names the upstream (HOST:PORT) of such an answer.
const UpstreamHeader = "X-Podtls-Upstream"

// failure is why an app connection could not be forwarded upstream.
type failure struct {
	reason string // stable metric label and ErrorHeader value
	status int    // the HTTP status an http-mode app gets
	err    error
}

func (p *Proxy) handleOutbound(l *listener, app net.Conn) {
	defer p.connDone(dirOutbound, app)
	up, f := p.connectUpstream(l)
	if f != nil {
		p.outboundFailed(l, app, f)
		return
	}
	defer func() { p.untrack(up.NetConn()); abort(up) }()
	p.splice(dirOutbound, l.outbound.Upstream, app, up)
}

// connectUpstream dials the upstream of l and completes the TLS handshake.
func (p *Proxy) connectUpstream(l *listener) (*tls.Conn, *failure) {
	raw, err := p.dialer.DialContext(p.ctx, "tcp", l.outbound.Upstream)
	if err != nil {
		p.m.dialFailures.With(dirOutbound).Inc()
		f := classifyDial(err)
		return nil, &f
	}
	if !p.track(raw) {
		raw.Close()
		return nil, &failure{reason: "shutting_down", status: http.StatusServiceUnavailable, err: errors.New("the sidecar is shutting down")}
	}
	tc := tls.Client(raw, l.clientTLS)
	_ = raw.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		p.handshakeFailed(dirOutbound, err, raw.RemoteAddr())
		p.untrack(raw)
		raw.Close()
		return nil, &failure{reason: handshakeReason(err), status: handshakeStatus(err), err: err}
	}
	_ = raw.SetDeadline(time.Time{})
	p.handshakeDone(dirOutbound, tc)
	return tc, nil
}

// outboundFailed counts and logs f and tells the app: an HTTP answer in http
// mode when the app sent an HTTP/1 request, a reset otherwise, so the app
// never mistakes the failure for a clean end of the stream.
func (p *Proxy) outboundFailed(l *listener, app net.Conn, f *failure) {
	up := l.outbound.Upstream
	p.m.outFailures.With(up, f.reason).Inc()
	p.log.Warn("upstream unavailable", "upstream", up, "listen", l.outbound.Listen, "reason", f.reason, "error", f.err)
	if p.cfg.Mode == ModeHTTP && p.answerHTTP(app, up, f) {
		return
	}
	reset(app)
}

// reset makes the coming Close send a TCP RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// answerHTTP reads the app's request head and answers it with f's status.
// It reports false, having written nothing, when the app did not send an
// HTTP/1 request in time (an h2c or non-HTTP client), so the caller resets.
func (p *Proxy) answerHTTP(app net.Conn, upstream string, f *failure) bool {
	_ = app.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	req, err := http.ReadRequest(bufio.NewReader(app))
	if err != nil || req.ProtoMajor != 1 {
		return false
	}
	body := fmt.Sprintf("podtls: upstream %s unavailable (%s): %v\n", upstream, f.reason, f.err)
	resp := &http.Response{
		StatusCode: f.status, ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Content-Type": {"text/plain; charset=utf-8"},
			ErrorHeader:    {f.reason},
			UpstreamHeader: {upstream},
		},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Close: true, Request: req,
	}
	if err := resp.Write(app); err != nil {
		return false
	}
	// Read what the app still sends (the request body) until it closes, so
	// unread bytes do not turn the close into a reset that could discard the
	// answer before the app reads it.
	if cw, ok := app.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	_ = app.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(app, 1<<20))
	return true
}

// classifyDial maps a dial error to a failure: refused connections are the
// upstream's answer (502); an upstream that cannot be found or reached in
// time is unavailable (503).
func classifyDial(err error) failure {
	f := failure{reason: "dial_error", status: http.StatusBadGateway, err: err}
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		f.reason, f.status = "shutting_down", http.StatusServiceUnavailable
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		f.reason, f.status = "no_such_host", http.StatusServiceUnavailable
	case errors.As(err, &dnsErr):
		f.reason, f.status = "dns_error", http.StatusServiceUnavailable
	case errors.Is(err, syscall.ECONNREFUSED):
		f.reason = "connection_refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		f.reason, f.status = "unreachable", http.StatusServiceUnavailable
	case errors.As(err, &ne) && ne.Timeout():
		f.reason, f.status = "timeout", http.StatusServiceUnavailable
	}
	return f
}

// handshakeReason is "tls_" and the handshake failure reason of tlsconfig,
// e.g. tls_unknown_ca, tls_name_mismatch, tls_timeout.
func handshakeReason(err error) string {
	r := tlsconfig.FailureReason(err)
	if strings.HasPrefix(r, "tls_") {
		return r
	}
	return "tls_" + r
}

// handshakeStatus is 503 for a handshake that timed out (nothing answered)
// and 502 for one the upstream failed or we refused.
func handshakeStatus(err error) int {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}
