// Package stats holds the small arithmetic of the benchmark report: medians
// over rounds and ratios taken within one round, so machine noise between
// rounds does not leak into the comparison.
package stats

import (
	"math"
	"slices"
	"time"
)

// Median of xs; NaN for none. Even counts average the middle two.
func Median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// MedianDuration is Median for durations; 0 for none.
func MedianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	m := Median(xs)
	if math.IsNaN(m) {
		return 0
	}
	return time.Duration(math.Round(m))
}

// Ratio is a/b, NaN when b is not positive (no baseline measured).
func Ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// PairedRatios pairs a[i] with b[i] (same round) and returns their ratios.
func PairedRatios(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, n)
	for i := range n {
		out[i] = Ratio(a[i], b[i])
	}
	return out
}

// Verdict is PASS when got >= want (or got <= want for an upper bound), MISS
// otherwise, and n/a when nothing was measured.
func Verdict(got, want float64, upperBound bool) string {
	switch {
	case math.IsNaN(got):
		return "n/a"
	case upperBound && got <= want, !upperBound && got >= want:
		return "PASS"
	default:
		return "MISS"
	}
}

// Slope is the least-squares slope of ys over xs (same length, at least two
// distinct xs); NaN otherwise.
func Slope(xs, ys []float64) float64 {
	if len(xs) != len(ys) || len(xs) < 2 {
		return math.NaN()
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return math.NaN()
	}
	return num / den
}
