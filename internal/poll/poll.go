// Package poll holds the two small things every integration test of podtls
// needs: a free loopback port to hand a server, and a loop that waits for a
// condition and says, when it gives up, why the condition was last false.
//
// It imports nothing of podtls, so any package's tests (internal or external)
// can use it without an import cycle.
package poll

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Interval is how often Eventually checks its condition: fast enough that
// tests measuring latencies see sub-100 ms changes, slow enough not to load
// the API server.
const Interval = 50 * time.Millisecond

// handedOut holds the ports FreePort returned in this process.
var handedOut sync.Map

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and that
// no earlier call in this process returned: the kernel offers a just-closed port
// again, and two servers of one test given the same port fail to start (seen in
// CI: a controller's health and webhook addresses collided). Another process
// may still take it before the caller listens; on a test machine that is rare
// enough not to matter.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
			return 0
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port
		}
	}
	t.Fatal("find a free port: every port offered was handed out before")
	return 0
}

// Eventually calls cond every Interval until it returns true, and fails t
// after timeout with what and the reason cond gave last. cond may itself call
// t.Fatal (e.g. when the process it waits for has exited).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if !time.Now().Before(deadline) {
			break
		}
		time.Sleep(Interval)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
}
