package metrics

import (
	"bufio"
	"math"
	"slices"
	"sync/atomic"
)

// Histogram counts observations into fixed buckets and keeps their sum.
type Histogram struct {
	upper  []float64       // upper bounds, ascending, without +Inf
	counts []atomic.Uint64 // per bucket (not cumulative); the last is +Inf
	sum    atomic.Uint64   // float64 bits
}

func newHistogram(upper []float64) *Histogram {
	return &Histogram{upper: upper, counts: make([]atomic.Uint64, len(upper)+1)}
}

// Observe adds one observation of v.
func (h *Histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.upper, v) // first bound >= v: buckets are "le"
	h.counts[i].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Sum returns the sum of the observations.
func (h *Histogram) Sum() float64 { return math.Float64frombits(h.sum.Load()) }

// HistogramVec is a family of histograms partitioned by labels, all with the
// same buckets.
type HistogramVec struct{ v *vec[Histogram] }

// NewHistogramVec registers a histogram family with the given bucket upper
// bounds (ascending; +Inf is implied). It panics on unsorted or empty
// buckets, a programming error caught by tests.
func (r *Registry) NewHistogramVec(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if len(buckets) == 0 || !slices.IsSorted(buckets) || slices.Contains(labels, "le") {
		panic("metrics: " + name + ": buckets must be ascending and non-empty, and \"le\" is reserved")
	}
	upper := slices.Clone(buckets)
	h := &HistogramVec{v: newVec[Histogram](name, help, "histogram", labels)}
	h.v.newChild = func() *Histogram { return newHistogram(upper) }
	r.add(h)
	return h
}

// With returns the histogram for the label values, creating it empty.
func (h *HistogramVec) With(values ...string) *Histogram { return h.v.with(values) }

func (h *HistogramVec) write(w *bufio.Writer) {
	h.v.writeHeader(w)
	labels := append(slices.Clone(h.v.labels), "le")
	h.v.each(func(vals []string, hi *Histogram) {
		// The count written is the buckets' total, not a separate counter,
		// so +Inf and _count agree while observations go on.
		var cum uint64
		lv := append(slices.Clone(vals), "")
		for i := range hi.counts {
			cum += hi.counts[i].Load()
			if i < len(hi.upper) {
				lv[len(lv)-1] = formatFloat(hi.upper[i])
			} else {
				lv[len(lv)-1] = "+Inf"
			}
			writeSample(w, h.v.name+"_bucket", labels, lv, float64(cum))
		}
		writeSample(w, h.v.name+"_sum", h.v.labels, vals, hi.Sum())
		writeSample(w, h.v.name+"_count", h.v.labels, vals, float64(cum))
	})
}
