package contract

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeouts(t *testing.T) {
	cases := []struct {
		ann       map[string]string
		idle      time.Duration
		drain     time.Duration
		wantErr   []string
		wantWarns int
	}{
		{ann: map[string]string{}, idle: 0, drain: 0},
		{ann: map[string]string{IdleTimeout: "24h", DrainTimeout: " 45s "}, idle: 24 * time.Hour, drain: 45 * time.Second},
		{ann: map[string]string{IdleTimeout: "1s", DrainTimeout: "1h"}, idle: time.Second, drain: time.Hour},
		{ann: map[string]string{IdleTimeout: "168h"}, idle: 168 * time.Hour},
		{ann: map[string]string{IdleTimeout: "1d"}, wantErr: []string{IdleTimeout, `"1d" is not a duration`, "between 1s and 168h"}},
		{ann: map[string]string{IdleTimeout: "500ms"}, wantErr: []string{IdleTimeout, "500ms is out of range"}},
		{ann: map[string]string{IdleTimeout: "169h"}, wantErr: []string{IdleTimeout, "out of range"}},
		{ann: map[string]string{DrainTimeout: "0s"}, wantErr: []string{DrainTimeout, "out of range", "between 1s and 1h"}},
		{ann: map[string]string{DrainTimeout: "-5s"}, wantErr: []string{DrainTimeout, "out of range"}},
		{ann: map[string]string{DrainTimeout: "2h"}, wantErr: []string{DrainTimeout, "out of range"}},
		{ann: map[string]string{DrainTimeout: "soon", IdleTimeout: "never"}, wantErr: []string{DrainTimeout, IdleTimeout}},
	}
	for _, tc := range cases {
		tc.ann[Upstreams] = "a.demo.svc:1@2"
		spec, _, err := Parse(tc.ann, "demo", Defaults{TrustDomain: "cluster.local"})
		if len(tc.wantErr) > 0 {
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%v) error %v, want it to contain %q", tc.ann, err, w)
				}
			}
			continue
		}
		if err != nil || spec.IdleTimeout != tc.idle || spec.DrainTimeout != tc.drain {
			t.Errorf("Parse(%v) = idle %s drain %s, %v; want %s %s", tc.ann, spec.IdleTimeout, spec.DrainTimeout, err, tc.idle, tc.drain)
		}
	}
}

// FuzzParseTimeouts: Parse never accepts a timeout out of its bounds, and
// what it accepts renders (time.Duration.String, as the webhook does) to a
// value it accepts again unchanged.
func FuzzParseTimeouts(f *testing.F) {
	for _, s := range []string{"1h", "20s", "1h0m0s", "0", "-1s", "1e3s", "9223372036854775807ns", "1.5m", " 3m "} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, idle, drain string) {
		ann := map[string]string{Upstreams: "a.demo.svc:1@2", IdleTimeout: idle, DrainTimeout: drain}
		spec, _, err := Parse(ann, "demo", Defaults{TrustDomain: "cluster.local"})
		if err != nil {
			return
		}
		if spec.IdleTimeout < MinIdleTimeout || spec.IdleTimeout > MaxIdleTimeout || spec.DrainTimeout < MinDrainTimeout || spec.DrainTimeout > MaxDrainTimeout {
			t.Fatalf("out of bounds accepted: idle %s drain %s", spec.IdleTimeout, spec.DrainTimeout)
		}
		again, _, err := Parse(map[string]string{Upstreams: "a.demo.svc:1@2",
			IdleTimeout: spec.IdleTimeout.String(), DrainTimeout: spec.DrainTimeout.String()}, "demo", Defaults{TrustDomain: "cluster.local"})
		if err != nil || again.IdleTimeout != spec.IdleTimeout || again.DrainTimeout != spec.DrainTimeout {
			t.Fatalf("rendered timeouts do not parse back: %v %+v", err, again)
		}
	})
}
