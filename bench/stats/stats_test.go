package stats

import (
	"math"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even averages the middle", []float64{4, 1, 3, 2}, 2.5},
		{"failed rounds are skipped", []float64{nan, 5, 1, nan, 3}, 3},
		{"single", []float64{7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Median(tt.in); got != tt.want {
				t.Fatalf("Median(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Fatalf("Median(nil) = %v, want NaN", got)
	}
	if got := Median([]float64{nan}); !math.IsNaN(got) {
		t.Fatalf("Median(NaN) = %v, want NaN", got)
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 {
		t.Fatal("Median reordered its input")
	}
}

func TestMedianDuration(t *testing.T) {
	if got := MedianDuration([]time.Duration{3, 1, 2}); got != 2 {
		t.Fatalf("got %v", got)
	}
	if got := MedianDuration(nil); got != 0 {
		t.Fatalf("got %v", got)
	}
}

func TestPairedRatiosStayWithinRound(t *testing.T) {
	// Round 2 is slow for everyone; per-round ratios hide that, a ratio of
	// medians would not pair them.
	a := []float64{110, 55, 120}
	b := []float64{100, 50, math.NaN()}
	got := PairedRatios(a, b)
	if len(got) != 3 || got[0] != 1.1 || got[1] != 1.1 || !math.IsNaN(got[2]) {
		t.Fatalf("PairedRatios = %v", got)
	}
	if m := Median(got); m != 1.1 {
		t.Fatalf("median ratio = %v, want 1.1", m)
	}
	if r := Ratio(1, 0); !math.IsNaN(r) {
		t.Fatalf("Ratio(1, 0) = %v, want NaN", r)
	}
	if got := PairedRatios([]float64{1, 2}, []float64{1}); len(got) != 1 {
		t.Fatalf("unequal lengths: %v", got)
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		got, want float64
		upper     bool
		verdict   string
	}{
		{1.31, 1.3, false, "PASS"},
		{1.3, 1.3, false, "PASS"},
		{1.29, 1.3, false, "MISS"},
		{9.9, 10, true, "PASS"},
		{10.1, 10, true, "MISS"},
		{math.NaN(), 10, true, "n/a"},
	}
	for _, tt := range tests {
		if v := Verdict(tt.got, tt.want, tt.upper); v != tt.verdict {
			t.Errorf("Verdict(%v, %v, %v) = %s, want %s", tt.got, tt.want, tt.upper, v, tt.verdict)
		}
	}
}

func TestSlope(t *testing.T) {
	cases := []struct {
		name   string
		xs, ys []float64
		want   float64
	}{
		{"line", []float64{0, 1, 2}, []float64{1, 3, 5}, 2},
		{"noisy", []float64{0, 500, 1000, 2000}, []float64{9, 40, 71, 127}, 0.058914},
		{"flat", []float64{1, 2, 3}, []float64{4, 4, 4}, 0},
		{"one point", []float64{1}, []float64{1}, math.NaN()},
		{"same x", []float64{2, 2}, []float64{1, 3}, math.NaN()},
		{"length mismatch", []float64{1, 2}, []float64{1}, math.NaN()},
	}
	for _, c := range cases {
		got := Slope(c.xs, c.ys)
		if math.IsNaN(c.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-c.want) > 1e-4) {
			t.Errorf("%s: Slope = %v, want %v", c.name, got, c.want)
		}
	}
}
