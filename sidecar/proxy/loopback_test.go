package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/podtls/podtls/internal/testpki"
)

// needIPv6Loopback skips when this machine has no ::1 (the code under test
// handles that case; TestOutboundWithoutIPv6Loopback covers it).
func needIPv6Loopback(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
}

// echoOn is echoServer on a given address.
func echoOn(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("got:"), b...))
			}()
		}
	}()
	return ln.Addr().String()
}

// TestInboundTargetLocalhost: a "localhost:PORT" target reaches an app bound
// to 127.0.0.1 or, failing that, to ::1 only.
func TestInboundTargetLocalhost(t *testing.T) {
	needIPv6Loopback(t)
	for _, bind := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(bind, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(echoOn(t, bind))
			r := newRig(t, "localhost:"+port, nil)
			c := r.dial(t)
			defer c.Close()
			if _, err := io.WriteString(c, "hi"); err != nil {
				t.Fatal(err)
			}
			_ = c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "got:hi" {
				t.Fatalf("through localhost target to an app on %s: %q, %v", bind, got, err)
			}
		})
	}
}

// TestInboundDualStack: a listener on ":PORT" (what the webhook renders)
// takes clients over IPv4 and IPv6.
func TestInboundDualStack(t *testing.T) {
	needIPv6Loopback(t)
	r := newRig(t, echoServer(t), func(c *Config) { c.Inbound[0].Listen = ":0" })
	_, port, _ := net.SplitHostPort(r.addr)
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := tls.Dial("tcp", net.JoinHostPort(host, port), r.client)
		if err != nil {
			t.Fatalf("client over %s: %v", host, err)
		}
		_, _ = io.WriteString(c, host)
		_ = c.CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "got:"+host {
			t.Fatalf("over %s: %q, %v", host, got, err)
		}
	}
}

// TestOutboundLocalhostBothFamilies: an outbound on "localhost:PORT" takes
// the app's connections on 127.0.0.1 and on ::1, same port.
func TestOutboundLocalhostBothFamilies(t *testing.T) {
	needIPv6Loopback(t)
	r := newOutRig(t, testpki.NewCA(t, "mesh"), deadPort(t), func(c *Config) { c.Outbound[0].Listen = "localhost:0" })
	addrs := r.p.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("bound %v, want 127.0.0.1 and ::1", addrs)
	}
	_, p4, _ := net.SplitHostPort(addrs[0].String())
	_, p6, _ := net.SplitHostPort(addrs[1].String())
	if !strings.HasPrefix(addrs[0].String(), "127.0.0.1:") || !strings.HasPrefix(addrs[1].String(), "[::1]:") || p4 != p6 {
		t.Fatalf("bound %v, want 127.0.0.1 and [::1] on one port", addrs)
	}
	// Both reach the proxy: the dead upstream resets each.
	for _, a := range addrs {
		if _, err := appRead(t, a.String()); err == nil || !strings.Contains(err.Error(), "reset") {
			t.Fatalf("app on %s: %v, want the proxy's reset", a, err)
		}
	}
}

// TestOutboundWithoutIPv6Loopback: a pod without ::1 still gets its IPv4
// outbound listener; only that one address is skipped.
func TestOutboundWithoutIPv6Loopback(t *testing.T) {
	r := newOutRig(t, testpki.NewCA(t, "mesh"), deadPort(t), func(c *Config) {
		c.Outbound[0].Listen = "localhost:0"
		c.listen = func(ctx context.Context, network, addr string) (net.Listener, error) {
			if strings.HasPrefix(addr, "[::1]") {
				return nil, &net.OpError{Op: "listen", Net: network, Err: syscall.EADDRNOTAVAIL}
			}
			var lc net.ListenConfig
			return lc.Listen(ctx, network, addr)
		}
	})
	if addrs := r.p.Addrs(); len(addrs) != 1 || !strings.HasPrefix(addrs[0].String(), "127.0.0.1:") {
		t.Fatalf("bound %v, want only 127.0.0.1", addrs)
	}
}

func TestIPv6Unavailable(t *testing.T) {
	for err, want := range map[error]bool{
		&net.OpError{Op: "listen", Err: syscall.EADDRNOTAVAIL}:   true,
		&net.OpError{Op: "listen", Err: syscall.EAFNOSUPPORT}:    true,
		&net.OpError{Op: "listen", Err: syscall.EPROTONOSUPPORT}: true,
		&net.OpError{Op: "listen", Err: syscall.EADDRINUSE}:      false,
		&net.OpError{Op: "listen", Err: syscall.EACCES}:          false,
		fmt.Errorf("wrapped: %w", syscall.EADDRNOTAVAIL):         true,
	} {
		if got := ipv6Unavailable(err); got != want {
			t.Errorf("ipv6Unavailable(%v) = %v, want %v", err, got, want)
		}
	}
}
