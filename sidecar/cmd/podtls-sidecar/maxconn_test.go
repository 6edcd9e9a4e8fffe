package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/testpki"
)

// TestMaxConnectionsFromMemoryLimit runs the real binary with the connection
// limit the webhook renders for the smallest memory limit it admits, holds
// that many mTLS connections open (each proven by an echo through the app),
// then opens more: every extra one is refused, counted and logged, the held
// ones keep working, and the sidecar's peak memory stays within the limit.
func TestMaxConnectionsFromMemoryLimit(t *testing.T) {
	limit := contract.MaxConnectionsFor(contract.MinMemoryLimit)
	p := newPKI(t)
	app := echoApp(t)
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app,
		"--cert-dir", p.certDir(t, "server", p.serverLeaf(t)), "--trust-bundle", p.caFile,
		"--max-connections", strconv.Itoa(limit))
	client := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")

	var held []*tls.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := range limit {
		c, err := echoOnce(inbound, client, nil)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, limit, err)
		}
		held = append(held, c)
	}
	const extra = 5
	for i := range extra {
		c, err := echoOnce(inbound, client, nil)
		if err == nil {
			c.Close()
			t.Fatalf("extra connection %d served above --max-connections %d", i+1, limit)
		}
	}
	if got := sc.counter(t, `podtls_sidecar_connections_rejected_total{reason="max_connections"}`); got != extra {
		t.Errorf("rejected counter %v, want %d", got, extra)
	}
	sc.waitLog(t, "connection refused: at --max-connections", fmt.Sprintf(`"limit":%d`, limit))
	for i, c := range held {
		if _, err := echoOnce("", nil, c); err != nil {
			t.Fatalf("held connection %d broke after the refusals: %v", i, err)
		}
	}
	hwm := statusKB(t, sc.cmd.Process.Pid, "VmHWM")
	if hwm*1024 > contract.MinMemoryLimit {
		t.Errorf("peak RSS %d kB with %d connections is above the %d MiB limit they were computed for", hwm, limit, contract.MinMemoryLimit>>20)
	}
	t.Logf("%d connections held, %d refused, peak RSS %d kB (limit %d kB)", limit, extra, hwm, contract.MinMemoryLimit>>10)
}

// echoOnce sends one byte through c (dialing addr with cfg when c is nil) and
// reads it back.
func echoOnce(addr string, cfg *tls.Config, c *tls.Conn) (*tls.Conn, error) {
	if c == nil {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		c = nc.(*tls.Conn)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, b); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// echoApp is a TCP app echoing every byte.
func echoApp(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func statusKB(t *testing.T, pid int, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}
