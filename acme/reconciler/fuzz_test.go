package reconciler

import (
	"testing"
	"time"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
)

// FuzzDecide feeds arbitrary Secret annotations (anyone with Secret access
// can edit them) through Decode into decide: it must not panic, must never
// order before next-attempt, and must always leave a time to look again
// when it does not order.
func FuzzDecide(f *testing.F) {
	f.Add("2026-11-01T12:00:00Z", "2026-11-01T13:00:00Z", "", "3", int64(0), true)
	f.Add("garbage", "", "1", "-1", int64(3600), false)
	f.Add("", "9999-12-31T23:59:59Z", "x", "99999999999999999999", int64(-1<<40), true)
	f.Fuzz(func(t *testing.T, renewAt, nextAttempt, force, failures string, offset int64, withLeaf bool) {
		ann := map[string]string{status.RenewAt: renewAt, status.NextAttempt: nextAttempt,
			status.ForceRenew: force, status.Failures: failures, status.Directory: "d"}
		st, _ := status.Decode(ann)
		hosts := []string{"a.example.com"}
		var leaf = leafFor(hosts, t0, 90*24*time.Hour)
		if !withLeaf {
			leaf = nil
		}
		now := t0.Add(time.Duration(offset) * time.Second)
		d := decide(now, hosts, leaf, st, "d", policyOf(issuerconfig.Config{}))
		if d.Order && now.Before(st.NextAttempt) {
			t.Fatalf("orders at %s before next-attempt %s", now, st.NextAttempt)
		}
		if !d.Order && d.Next.IsZero() {
			t.Fatalf("no order and nothing scheduled: %+v", d)
		}
		if d.Order && d.Need == "" {
			t.Fatal("orders without a reason")
		}
		_ = backoff(st.Failures+1, policyOf(issuerconfig.Config{}), 0.5)
	})
}
