package metrics

import (
	"strings"
	"testing"
)

func TestHistogram(t *testing.T) {
	tests := []struct {
		name    string
		observe []float64
		want    string
	}{
		{
			name:    "buckets are cumulative and le is inclusive",
			observe: []float64{0.001, 0.002, 0.5, 3},
			want: `# HELP d_seconds Durations.
# TYPE d_seconds histogram
d_seconds_bucket{dir="in",le="0.001"} 1
d_seconds_bucket{dir="in",le="0.01"} 2
d_seconds_bucket{dir="in",le="1"} 3
d_seconds_bucket{dir="in",le="+Inf"} 4
d_seconds_sum{dir="in"} 3.503
d_seconds_count{dir="in"} 4
`,
		},
		{
			name: "no observations: no child",
			want: "# HELP d_seconds Durations.\n# TYPE d_seconds histogram\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			h := r.NewHistogramVec("d_seconds", "Durations.", []float64{0.001, 0.01, 1}, "dir")
			for _, v := range tt.observe {
				h.With("in").Observe(v)
			}
			var b strings.Builder
			if err := r.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
			if len(tt.observe) > 0 {
				if got := h.With("in").Count(); got != uint64(len(tt.observe)) {
					t.Fatalf("Count() = %d, want %d", got, len(tt.observe))
				}
			}
		})
	}
}

func TestHistogramBadBucketsPanic(t *testing.T) {
	for name, buckets := range map[string][]float64{"empty": nil, "unsorted": {1, 0.5}} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("expected panic")
				}
			}()
			NewRegistry().NewHistogramVec("x", "x", buckets)
		})
	}
}
