package poll

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records instead of stopping, so the
// failure path of Eventually can be checked.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestEventually(t *testing.T) {
	tests := []struct {
		name     string
		okAfter  int // calls until cond is true; 0 = never
		timeout  time.Duration
		wantFail string
	}{
		{name: "true at once", okAfter: 1, timeout: time.Second},
		{name: "true after a few polls", okAfter: 4, timeout: 5 * time.Second},
		{name: "never true", timeout: 200 * time.Millisecond, wantFail: "waiting for the thing: call"},
		{name: "zero timeout still checks once", okAfter: 1, timeout: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			calls := 0
			begin := time.Now()
			Eventually(r, tc.timeout, "the thing", func() (bool, string) {
				calls++
				return calls == tc.okAfter, fmt.Sprintf("call %d", calls)
			})
			took := time.Since(begin)
			if tc.wantFail == "" {
				if r.failed != "" {
					t.Fatalf("failed: %s", r.failed)
				}
				if calls != tc.okAfter {
					t.Fatalf("cond called %d times, want %d", calls, tc.okAfter)
				}
				return
			}
			if !strings.Contains(r.failed, tc.wantFail) {
				t.Fatalf("failure %q does not contain %q", r.failed, tc.wantFail)
			}
			if took < tc.timeout {
				t.Fatalf("gave up after %s, before the %s timeout", took, tc.timeout)
			}
		})
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("port %d", p)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("free port %d not usable: %v", p, err)
	}
	_ = l.Close()
}
