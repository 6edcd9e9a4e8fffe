package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// TestConnectionLog: with an access log, a spliced (tcp) connection gets one
// line at its close, with its peer, byte counts and why it ended.
func TestConnectionLog(t *testing.T) {
	tests := []struct {
		name string
		// run makes one connection through a proxy logging to log and
		// returns the upstream the line must name and the wanted fields.
		run func(t *testing.T, log *accessLog) (upstream string, want map[string]any)
	}{
		{"inbound, both sides close", func(t *testing.T, log *accessLog) (string, map[string]any) {
			app := echoServer(t)
			r := newRig(t, app, func(c *Config) { c.AccessLog = log.logger() })
			c := r.dial(t)
			defer c.Close()
			if _, err := io.WriteString(c, "hello"); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(c); err != nil || string(got) != "got:hello" {
				t.Fatalf("read %q, %v", got, err)
			}
			return app, map[string]any{"direction": "inbound", "peer": clientID, "bytes_in": 5.0, "bytes_out": 9.0, "close_reason": "closed"}
		}},
		{"inbound, idle", func(t *testing.T, log *accessLog) (string, map[string]any) {
			app, received := sinkServer(t)
			r := newRig(t, app, func(c *Config) { c.AccessLog = log.logger(); c.IdleTimeout = 200 * time.Millisecond })
			c := r.dial(t)
			defer c.Close()
			if _, err := io.WriteString(c, "ping"); err != nil {
				t.Fatal(err)
			}
			poll.Eventually(t, 10*time.Second, "the ping to reach the app", func() (bool, string) {
				return received.Load() == 4, fmt.Sprintf("app received %d bytes", received.Load())
			})
			_, _ = io.ReadAll(c) // until the proxy closes the idle connection
			return app, map[string]any{"direction": "inbound", "peer": clientID, "bytes_in": 4.0, "bytes_out": 0.0, "close_reason": "idle_timeout"}
		}},
		{"inbound, client reset", func(t *testing.T, log *accessLog) (string, map[string]any) {
			app, received := sinkServer(t)
			r := newRig(t, app, func(c *Config) { c.AccessLog = log.logger() })
			raw, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, r.client)
			if _, err := io.WriteString(c, "ping"); err != nil {
				t.Fatal(err)
			}
			poll.Eventually(t, 10*time.Second, "the ping to reach the app", func() (bool, string) {
				return received.Load() == 4, fmt.Sprintf("app received %d bytes", received.Load())
			})
			_ = raw.(*net.TCPConn).SetLinger(0)
			raw.Close() // a reset
			return app, map[string]any{"direction": "inbound", "peer": clientID, "bytes_in": 4.0, "close_reason": "error"}
		}},
		{"inbound, open at the end of the drain", func(t *testing.T, log *accessLog) (string, map[string]any) {
			app, received := sinkServer(t)
			r := newRig(t, app, func(c *Config) { c.AccessLog = log.logger() })
			c := r.dial(t)
			defer c.Close()
			if _, err := io.WriteString(c, "ping"); err != nil {
				t.Fatal(err)
			}
			poll.Eventually(t, 10*time.Second, "the ping to reach the app", func() (bool, string) {
				return received.Load() == 4, fmt.Sprintf("app received %d bytes", received.Load())
			})
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := r.p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown = %v, want deadline exceeded (a connection was open)", err)
			}
			return app, map[string]any{"direction": "inbound", "peer": clientID, "bytes_in": 4.0, "close_reason": "shutdown"}
		}},
		{"outbound, upstream's identity", func(t *testing.T, log *accessLog) (string, map[string]any) {
			ca := testpki.NewCA(t, "mesh")
			const upID = "spiffe://cluster.local/ns/demo/sa/server"
			up := tlsUpstream(t, ca.Issue(t, testpki.LeafOptions{SPIFFEID: upID, DNSNames: []string{upstreamName}}))
			r := newOutRig(t, ca, up, func(c *Config) { c.AccessLog = log.logger() })
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(c); err != nil || string(got) != "hello" {
				t.Fatalf("read %q, %v", got, err)
			}
			c.Close()
			return up, map[string]any{"direction": "outbound", "peer": upID, "bytes_in": 0.0, "bytes_out": 5.0, "close_reason": "closed"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log accessLog
			upstream, want := tt.run(t, &log)
			want["msg"], want["upstream"] = "connection", upstream
			raw, lines := log.waitLines(t, 1)
			for k, v := range want {
				if lines[0][k] != v {
					t.Errorf("%s = %v, want %v (line %s)", k, lines[0][k], v, raw[0])
				}
			}
			for _, k := range []string{"time", "duration_ms", "remote"} {
				if _, ok := lines[0][k]; !ok {
					t.Errorf("no %s in %s", k, raw[0])
				}
			}
		})
	}
}
