package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/tlsconfig"
)

// requestBuckets are the upper bounds, in seconds, of
// podtls_sidecar_http_request_duration_seconds: RPC latencies from 1ms to 10s.
var requestBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// maxPeerLabels bounds the distinct values of the peer label per process:
// the first ones seen keep their SPIFFE ID, later ones are counted as
// otherPeer, so a trust domain minting identities cannot grow the metrics
// without bound.
const maxPeerLabels = 100

// otherPeer is the peer label of identities beyond maxPeerLabels. It cannot
// be a SPIFFE ID (those start with "spiffe://").
const otherPeer = "other"

// Status classes of podtls_sidecar_http_requests_total besides 1xx..5xx:
// the client went away before any response (status 0 in the access log), or
// a status outside 100-599.
const (
	classCanceled = "canceled"
	classOther    = "other"
)

// observer holds the per-request metrics of HTTP mode and the access log.
type observer struct {
	requests *metrics.CounterVec   // direction, upstream, peer, code_class
	duration *metrics.HistogramVec // direction, upstream
	inFlight *metrics.GaugeVec     // direction
	grpc     *metrics.CounterVec   // direction, upstream, grpc_code
	peers    peerLabels
	log      *slog.Logger // nil: no access log
}

func newObserver(r *metrics.Registry, accessLog *slog.Logger) *observer {
	return &observer{
		requests: r.NewCounterVec("podtls_sidecar_http_requests_total",
			"HTTP mode requests answered, by direction, upstream (inbound: the app target; outbound: the upstream HOST:PORT), peer SPIFFE ID (the first 100 distinct, then \"other\") and status class.",
			"direction", "upstream", "peer", "code_class"),
		duration: r.NewHistogramVec("podtls_sidecar_http_request_duration_seconds",
			"HTTP mode request duration from the request head to the end of the response (upgrades: to the 101), by direction and upstream.",
			requestBuckets, "direction", "upstream"),
		inFlight: r.NewGaugeVec("podtls_sidecar_http_requests_in_flight", "HTTP mode requests being answered, by direction.", "direction"),
		grpc: r.NewCounterVec("podtls_sidecar_grpc_responses_total",
			"gRPC responses (a grpc-status in the trailers or headers) by direction, upstream and gRPC status code name.",
			"direction", "upstream", "grpc_code"),
		peers: peerLabels{max: maxPeerLabels},
		log:   accessLog,
	}
}

// observe wraps next, the handler of one HTTP-mode listener, with the
// per-request metrics (podtls_sidecar_http_requests_total,
// podtls_sidecar_http_request_duration_seconds,
// podtls_sidecar_http_requests_in_flight, podtls_sidecar_grpc_responses_total)
// and, with Config.AccessLog, one access-log line per request.
//
// direction is dirInbound or dirOutbound. upstream names where the requests
// go and must come from the configuration (bounded cardinality): the
// inbound listener's TARGET as given to --inbound, or the outbound
// upstream's HOST:PORT. For example, an outbound listener's server:
//
//	srv := &http.Server{Handler: p.observe(dirOutbound, o.Upstream, handler)}
//
// The peer is the verified client's SPIFFE ID when the request came over
// mTLS. A handler that learns the peer itself (outbound: the upstream's
// verified identity) reports it with notePeer, before it returns.
//
// next gets a ResponseWriter that keeps http.Flusher, http.Hijacker and,
// through Unwrap, every http.ResponseController feature; trailers pass
// untouched. A hijacked request (an Upgrade answered 101, e.g. a WebSocket)
// is counted when it is hijacked, with status 101: its duration is the time
// to the upgrade, not the connection's life.
func (p *Proxy) observe(direction, upstream string, next http.Handler) http.Handler {
	o := p.obs
	// The series of the route are looked up once, not per request.
	rt := &route{o: o, direction: direction, upstream: upstream,
		inFlight: o.inFlight.With(direction), duration: o.duration.With(direction, upstream)}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{route: rt, start: time.Now(), req: r}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			if id, err := tlsconfig.SPIFFEID(r.TLS.PeerCertificates[0]); err == nil {
				x.peer.Store(&id)
			}
		}
		if direction == dirOutbound {
			r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &countingBody{ReadCloser: r.Body, n: &x.bytesIn}
		}
		ow := &x.w
		ow.ResponseWriter, ow.x = w, x
		rt.inFlight.Inc()
		defer func() {
			// A panic (http.ErrAbortHandler from the ReverseProxy) still
			// balances the gauge; the server recovers it.
			x.finish(ow.finalStatus(r), ow.bytesOut, grpcStatus(w.Header()))
		}()
		next.ServeHTTP(ow, r)
	})
}

// exchangeKey is the context key of the *exchange of a request, for notePeer.
type exchangeKey struct{}

// notePeer records id as the peer of the request whose context ctx is (or
// derives from), when observe wraps its handler with the outbound
// direction. It may be called from any goroutine; the last call before the
// request is counted wins.
func notePeer(ctx context.Context, id string) {
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		x.peer.Store(&id)
	}
}

// route is what one observe call counts into.
type route struct {
	o                   *observer
	direction, upstream string
	inFlight            *metrics.Gauge
	duration            *metrics.Histogram
}

// exchange is one request observed.
type exchange struct {
	*route
	w       observedWriter // one allocation for both
	start   time.Time
	req     *http.Request
	peer    atomic.Pointer[string]
	bytesIn atomic.Int64 // the transport reads the body in its own goroutine
	done    atomic.Bool
}

// finish counts and logs the exchange, once.
func (x *exchange) finish(status int, bytesOut int64, grpc string) {
	if !x.done.CompareAndSwap(false, true) {
		return
	}
	elapsed := time.Since(x.start)
	o := x.o
	x.inFlight.Dec()
	var peer string
	if p := x.peer.Load(); p != nil {
		peer = *p
	}
	o.requests.With(x.direction, x.upstream, o.peers.label(peer), codeClass(status)).Inc()
	x.duration.Observe(elapsed.Seconds())
	if grpc != "" {
		o.grpc.With(x.direction, x.upstream, grpcCodeName(grpc)).Inc()
	}
	if o.log == nil {
		return
	}
	r := x.req
	attrs := []slog.Attr{
		slog.String("direction", x.direction),
		slog.String("method", r.Method),
		slog.String("authority", r.Host),
		// The escaped path never holds a literal '?': the query string
		// (which may carry secrets) is never logged.
		slog.String("path", r.URL.EscapedPath()),
		slog.String("protocol", r.Proto),
		slog.Int("status", status),
	}
	if grpc != "" {
		attrs = append(attrs, slog.String("grpc_status", grpc))
	}
	attrs = append(attrs,
		slog.Float64("duration_ms", millis(elapsed)),
		slog.Int64("bytes_in", x.bytesIn.Load()),
		slog.Int64("bytes_out", bytesOut),
		slog.String("peer", peer),
		slog.String("remote", r.RemoteAddr),
		slog.String("upstream", x.upstream),
	)
	o.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// observedWriter records the status and body size of a response. Only the
// handler's goroutine uses it (the ReverseProxy serializes its flushes with
// its writes).
type observedWriter struct {
	http.ResponseWriter
	x        *exchange
	status   int
	bytesOut int64
	hijacked bool
}

func (w *observedWriter) WriteHeader(code int) {
	// Informational answers (100 Continue, 103 Early Hints) come before the
	// final status; 101 is final (net/http treats it so too).
	if w.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write passes the server's error through unwrapped: callers of an
// io.Writer compare it.
func (w *observedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytesOut += int64(n)
	return n, err
}

// Flush implements http.Flusher for handlers that assert it.
func (w *observedWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *observedWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK // flushing sends the header
	}
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// Hijack implements http.Hijacker. The ReverseProxy hijacks the connection
// once the app answered an Upgrade with 101: the request is counted then.
func (w *observedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	w.hijacked = true
	w.x.finish(http.StatusSwitchingProtocols, w.bytesOut, "")
	return c, brw, nil
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (w *observedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finalStatus is the status the client got: what the handler wrote, 200 if
// it wrote nothing (net/http's default), or 0 when nothing was written
// because the client went away.
func (w *observedWriter) finalStatus(r *http.Request) int {
	switch {
	case w.hijacked:
		return http.StatusSwitchingProtocols
	case w.status != 0:
		return w.status
	case r.Context().Err() != nil:
		return 0
	}
	return http.StatusOK
}

// countingBody counts the request body bytes read. Read returns the body's
// error as is: io.EOF must stay io.EOF.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// codeClass is the code_class label of an HTTP status.
func codeClass(status int) string {
	switch {
	case status == 0:
		return classCanceled
	case status >= 100 && status < 600:
		return codeClasses[status/100-1]
	}
	return classOther
}

// grpcStatus is the response's grpc-status: the ReverseProxy has copied the
// trailers into the header map by the time the handler returns, under their
// name or, for trailers not announced, with http.TrailerPrefix; a
// trailers-only answer carries it among the headers.
func grpcStatus(h http.Header) string {
	if v := h.Get("Grpc-Status"); v != "" {
		return v
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}

// grpcCodes are the names of the gRPC status codes, indexed by code.
var grpcCodes = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
	"OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

// grpcCodeName is the grpc_code label of a grpc-status value; a value that
// is not a known code is Unknown, as gRPC clients read it.
func grpcCodeName(v string) string {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n >= len(grpcCodes) {
		return grpcCodes[2]
	}
	return grpcCodes[n]
}

// peerLabels hands out peer label values: the first max distinct SPIFFE
// IDs as they are, every later one as otherPeer.
type peerLabels struct {
	mu   sync.RWMutex
	seen map[string]struct{}
	max  int
}

func (s *peerLabels) label(id string) string {
	if id == "" {
		return ""
	}
	s.mu.RLock()
	_, ok := s.seen[id]
	s.mu.RUnlock()
	if ok {
		return id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[id]; ok {
		return id
	}
	if len(s.seen) >= s.max {
		return otherPeer
	}
	if s.seen == nil {
		s.seen = map[string]struct{}{}
	}
	s.seen[id] = struct{}{}
	return id
}
