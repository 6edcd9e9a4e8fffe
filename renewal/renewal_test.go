package renewal

import (
	"testing"
	"time"
)

func TestPolicyAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		p        Policy
		notAfter time.Time
		draw     float64
		want     time.Time
	}{
		{"serving 24h", Serving, nb.Add(24 * time.Hour), 0.9, nb.Add(16 * time.Hour)},
		{"serving 3s, exact", Serving, nb.Add(3 * time.Second), 0, nb.Add(2 * time.Second)},
		{"mesh no draw", Mesh, nb.Add(24 * time.Hour), 0, nb.Add(time.Duration(0.6 * float64(24*time.Hour)))},
		{"mesh half", Mesh, nb.Add(24 * time.Hour), 0.5, nb.Add(time.Duration(0.65 * float64(24*time.Hour)))},
		{"mesh max", Mesh, nb.Add(24 * time.Hour), 1, nb.Add(time.Duration(0.7 * float64(24*time.Hour)))},
		{"draw clamped high", Mesh, nb.Add(time.Hour), 7, nb.Add(42 * time.Minute)},
		{"draw clamped low", Mesh, nb.Add(time.Hour), -3, nb.Add(36 * time.Minute)},
		{"fraction 2/3 of 90 days", Fraction(2.0 / 3), nb.Add(90 * 24 * time.Hour), 0, nb.Add(60 * 24 * time.Hour)},
		{"fraction 1/2", Fraction(0.5), nb.Add(90 * 24 * time.Hour), 0, nb.Add(45 * 24 * time.Hour)},
		{"zero life", Mesh, nb, 0.5, nb},
		{"negative life", Serving, nb.Add(-time.Hour), 0.5, nb},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.At(nb, tc.notAfter, tc.draw); !got.Equal(tc.want) {
				t.Fatalf("At = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestInWindow(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	notAfter := now.Add(5 * 24 * time.Hour)
	for _, tc := range []struct {
		name       string
		start, end time.Time
		draw       float64
		want       time.Time
	}{
		{"start of a future window", now.Add(time.Hour), now.Add(3 * time.Hour), 0, now.Add(time.Hour)},
		{"middle of a future window", now.Add(time.Hour), now.Add(3 * time.Hour), 0.5, now.Add(2 * time.Hour)},
		{"window begun: now", now.Add(-time.Hour), now.Add(-time.Minute), 0.7, now},
		{"empty window", now.Add(time.Hour), now.Add(time.Hour), 0.3, now.Add(time.Hour)},
		{"reversed window: its start", now.Add(2 * time.Hour), now.Add(time.Hour), 0.3, now.Add(2 * time.Hour)},
		{"window past expiry", now.Add(10 * 24 * time.Hour), now.Add(11 * 24 * time.Hour), 0.5, notAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := InWindow(tc.start, tc.end, now, notAfter, tc.draw); !got.Equal(tc.want) {
				t.Fatalf("InWindow = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDraw(t *testing.T) {
	seen := map[float64]bool{}
	for range 1000 {
		d := Draw()
		if d < 0 || d >= 1 {
			t.Fatalf("Draw() = %v, want [0,1)", d)
		}
		seen[d] = true
	}
	if len(seen) < 990 {
		t.Errorf("1000 draws gave %d distinct values", len(seen))
	}
}
