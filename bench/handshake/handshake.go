// Package handshake is a load client that opens new TLS connections as fast
// as the server lets it, each with a full handshake (no session cache, so no
// resumption), and sends one HTTP/1.1 request per connection.
//
// Why a request per connection: in TLS 1.3 the client's Handshake returns
// before the server has verified the client's certificate and Finished, so a
// client that closes right after Handshake lets the server queue up unfinished
// mTLS work and overstates its rate. Reading the response proves the server
// finished the handshake. wrk with "Connection: close" cannot be used instead:
// it resumes sessions (see the benchmark docs).
package handshake

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one run.
type Config struct {
	Addr       string // host:port to dial
	ServerName string // SNI and the name verified by the probe
	Roots      *x509.CertPool
	ClientCert *tls.Certificate // nil: no client certificate
	Workers    int
	Duration   time.Duration
}

// Result counts what the run did.
type Result struct {
	Conns    int64         `json:"conns"` // completed: handshake, request, full response
	Errors   int64         `json:"errors"`
	Resumed  int64         `json:"resumed"` // must stay 0
	Elapsed  time.Duration `json:"elapsed_ns"`
	FirstErr string        `json:"first_error,omitempty"`
	// ClientCPU is the CPU time the client process used per second of run
	// (1.0 = one core busy); near the number of cores it may bottleneck the run.
	ClientCPU float64 `json:"client_cpu,omitempty"`
}

// PerSecond is the rate of completed connections.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Conns) / r.Elapsed.Seconds()
}

// Run first makes one fully verified connection (to prove the certificates,
// the name and the chain are right), then loads the server for cfg.Duration.
// The load connections skip verifying the server chain: the client shares its
// one core budget with nothing but itself, and spending it on ECDSA verifies
// would make the client, not the server, the bottleneck.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Workers < 1 || cfg.Duration <= 0 {
		return Result{}, errors.New("handshake: workers and duration must be positive")
	}
	base := &tls.Config{
		ServerName: cfg.ServerName,
		RootCAs:    cfg.Roots,
		MinVersion: tls.VersionTLS13,
		// X25519 only: the OpenSSL 3.0 peers cannot do the hybrid post-quantum
		// exchange Go offers by default, and comparing different key exchanges
		// would not compare the proxies.
		CurvePreferences: []tls.CurveID{tls.X25519},
	}
	if cfg.ClientCert != nil {
		base.Certificates = []tls.Certificate{*cfg.ClientCert}
	}
	if err := once(ctx, cfg.Addr, base); err != nil {
		return Result{}, fmt.Errorf("verified probe of %s: %w", cfg.Addr, err)
	}
	load := base.Clone()
	load.InsecureSkipVerify = true

	var res Result
	var firstErr sync.Once
	// The run ends at a wall-clock deadline rather than through a context
	// deadline: dials and handshakes would inherit a context deadline and fail
	// in a burst just before the context reports it, counting as errors.
	start := time.Now()
	end := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				err := once(ctx, cfg.Addr, load)
				if time.Now().After(end) {
					return // finished after the deadline: not part of the measured window
				}
				switch {
				case errors.Is(err, errResumed):
					atomic.AddInt64(&res.Resumed, 1)
				case err != nil && ctx.Err() == nil:
					atomic.AddInt64(&res.Errors, 1)
					firstErr.Do(func() { res.FirstErr = err.Error() })
				case err == nil:
					atomic.AddInt64(&res.Conns, 1)
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = cfg.Duration
	return res, ctx.Err()
}

var errResumed = errors.New("session was resumed")

// once makes one connection: full handshake, one request, the whole response.
func once(ctx context.Context, addr string, cfg *tls.Config) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer raw.Close()
	if err := raw.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return fmt.Errorf("deadline: %w", err)
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if conn.ConnectionState().DidResume {
		return errResumed
	}
	req := "GET / HTTP/1.1\r\nHost: " + cfg.ServerName + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
