// Package probe runs the app's probes for the kubelet. The webhook points the HTTP, TCP
// and gRPC probes of an injected pod's app containers at the sidecar's admin port
// (contract.AppHealthPath); the Prober runs each against the app on loopback with the
// original port, path, headers and timeout, and answers with the app's result: the
// app's HTTP status and the start of its body, 200 for a TCP connect or a SERVING gRPC
// health check, 503 with the reason for anything else. So the app can listen on
// 127.0.0.1 only, where nothing bypasses mTLS, and keep its probes.
package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/podtls/podtls/contract"
)

const (
	// defaultTimeout is the kubelet's default probe timeout (timeoutSeconds 1).
	defaultTimeout = time.Second
	// maxBody is how much of the app's answer is passed on: what the kubelet keeps of
	// a probe's output for events.
	maxBody = 10 << 10
	// userAgent is what the kubelet's prober sends; apps match on the prefix.
	userAgent = "kube-probe/podtls"
)

// Prober serves contract.AppHealthPrefix on the admin port.
type Prober struct {
	probes contract.AppProbesConfig
	host   string
	client *http.Client
	h2c    *http.Client
	log    *slog.Logger
}

// New returns a Prober running probes against the app on host (127.0.0.1 in a pod).
// tlsCfg is the client config of HTTPS probes (tlsconfig.ProbeClient).
func New(probes contract.AppProbesConfig, host string, tlsCfg *tls.Config, log *slog.Logger) *Prober {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		TLSClientConfig:   tlsCfg,
		DisableKeepAlives: true, // as the kubelet: every probe opens its own connection
		Proxy:             nil,
	}
	h2 := &http.Transport{DisableKeepAlives: true, Proxy: nil, Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true) // gRPC without TLS: HTTP/2 with prior knowledge
	return &Prober{
		probes: probes,
		h2c:    &http.Client{Transport: h2},
		host:   host,
		log:    log,
		client: &http.Client{
			Transport: tr,
			// The app's redirect is its answer (the kubelet counts 3xx as success).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// ServeHTTP runs the probe of r's path.
func (p *Prober) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ap, ok := p.probes[r.URL.Path]
	if !ok {
		http.Error(w, "no app probe at "+r.URL.Path, http.StatusNotFound)
		return
	}
	timeout := defaultTimeout
	if ap.TimeoutSeconds > 0 {
		timeout = time.Duration(ap.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	code, body, err := p.run(ctx, ap)
	if err != nil {
		p.log.Debug("app probe failed", "path", r.URL.Path, "error", err)
		code, body = http.StatusServiceUnavailable, []byte(err.Error()+"\n")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// run runs ap and returns the status code and body to answer with, or an error when
// the app could not be reached or answered badly.
func (p *Prober) run(ctx context.Context, ap contract.AppProbe) (int, []byte, error) {
	switch {
	case ap.HTTPGet != nil:
		return p.httpGet(ctx, ap.HTTPGet)
	case ap.TCPSocket != nil:
		addr := p.addr(ap.TCPSocket.Port)
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, nil, fmt.Errorf("tcp probe of %s: %w", addr, err)
		}
		conn.Close()
		return http.StatusOK, []byte("tcp " + addr + " accepts connections\n"), nil
	case ap.GRPC != nil:
		return p.grpc(ctx, ap.GRPC)
	default:
		return 0, nil, fmt.Errorf("probe has no handler")
	}
}

func (p *Prober) addr(port int32) string {
	return net.JoinHostPort(p.host, strconv.Itoa(int(port)))
}

func (p *Prober) httpGet(ctx context.Context, g *contract.HTTPGetProbe) (int, []byte, error) {
	scheme := "http"
	if g.Scheme == "HTTPS" {
		scheme = "https"
	}
	url := scheme + "://" + p.addr(g.Port) + g.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("http probe %s: %w", url, err)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "*/*")
	for _, h := range g.Headers {
		if http.CanonicalHeaderKey(h.Name) == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("http probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, fmt.Errorf("http probe %s: read body: %w", url, err)
	}
	return resp.StatusCode, body, nil
}

// grpc runs a grpc.health.v1.Health/Check over HTTP/2 without TLS, as the kubelet's
// gRPC probe does. It speaks the few bytes of gRPC framing and protobuf this one call
// needs (protowire for the protobuf) instead of linking grpc-go, which would add 5.5 MB
// (72 %) to the sidecar every pod runs; the tests check it against grpc-go's own
// health server.
func (p *Prober) grpc(ctx context.Context, g *contract.GRPCProbe) (int, []byte, error) {
	addr := p.addr(g.Port)
	fail := func(format string, args ...any) (int, []byte, error) {
		return 0, nil, fmt.Errorf("grpc probe of %s service %q: %s", addr, g.Service, fmt.Sprintf(format, args...))
	}
	msg := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), g.Service)
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+healthCheckPath, bytes.NewReader(append(frame, msg...)))
	if err != nil {
		return fail("%v", err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.h2c.Do(req)
	if err != nil {
		return fail("%v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fail("read answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail("HTTP status %d", resp.StatusCode)
	}
	// A trailers-only answer carries grpc-status in the headers.
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status")
	}
	if code != "0" {
		m := resp.Trailer.Get("Grpc-Message")
		if m == "" {
			m = resp.Header.Get("Grpc-Message")
		}
		return fail("grpc status %s (%s): %s", code, grpcCodeName(code), m)
	}
	status, err := parseHealthResponse(body)
	if err != nil {
		return fail("%v", err)
	}
	name := healthStatusName(status)
	if status != servingStatus {
		return http.StatusServiceUnavailable, []byte(fmt.Sprintf("grpc service %q at %s is %s\n", g.Service, addr, name)), nil
	}
	return http.StatusOK, []byte(fmt.Sprintf("grpc service %q at %s is %s\n", g.Service, addr, name)), nil
}

const (
	healthCheckPath = "/grpc.health.v1.Health/Check"
	servingStatus   = 1
)

// parseHealthResponse reads one uncompressed gRPC message frame holding a
// grpc.health.v1.HealthCheckResponse and returns its status (field 1; 0 when absent,
// as protobuf defaults it).
func parseHealthResponse(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, fmt.Errorf("answer of %d bytes is not a gRPC message", len(b))
	}
	if b[0] != 0 {
		return 0, fmt.Errorf("compressed answer (flag %d), which was not asked for", b[0])
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) != uint64(len(b)-5) {
		return 0, fmt.Errorf("message length %d, but %d bytes follow", n, len(b)-5)
	}
	var status uint64
	for m := b[5:]; len(m) > 0; {
		num, typ, l := protowire.ConsumeTag(m)
		if l < 0 {
			return 0, fmt.Errorf("bad protobuf tag: %v", protowire.ParseError(l))
		}
		if !num.IsValid() { // ConsumeTag checks only the lower bound
			return 0, fmt.Errorf("bad protobuf field number %d", num)
		}
		m = m[l:]
		if num == 1 && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(m)
			if l < 0 {
				return 0, fmt.Errorf("bad status: %v", protowire.ParseError(l))
			}
			status, m = v, m[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(num, typ, m)
		if l < 0 {
			return 0, fmt.Errorf("bad protobuf field %d: %v", num, protowire.ParseError(l))
		}
		m = m[l:]
	}
	return status, nil
}

// healthStatusName names a grpc.health.v1 serving status.
func healthStatusName(s uint64) string {
	switch s {
	case 0:
		return "UNKNOWN"
	case 1:
		return "SERVING"
	case 2:
		return "NOT_SERVING"
	case 3:
		return "SERVICE_UNKNOWN"
	}
	return "status " + strconv.FormatUint(s, 10)
}

// grpcCodeName names the gRPC status codes a health check answers with.
func grpcCodeName(code string) string {
	switch code {
	case "5":
		return "NotFound"
	case "12":
		return "Unimplemented"
	case "14":
		return "Unavailable"
	case "4":
		return "DeadlineExceeded"
	}
	return "code " + code
}
