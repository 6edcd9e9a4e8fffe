package metrics

import (
	"strings"
	"testing"
)

func TestWriteText(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("x_total", "Things.\nCounted.", "reason")
	c.With("b").Add(2)
	c.With(`a"q`).Inc()
	g := r.NewGaugeVec("y", "Gauge.", "dir")
	g.With("in").Inc()
	g.With("in").Inc()
	g.With("in").Dec()
	r.NewGaugeFunc("z", "Func.", []string{"cert"}, func() []Sample {
		return []Sample{{Labels: []string{"mesh"}, Value: 1.5}, {Labels: nil, Value: 9}}
	})
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `# HELP x_total Things.\nCounted.
# TYPE x_total counter
x_total{reason="a\"q"} 1
x_total{reason="b"} 2
# HELP y Gauge.
# TYPE y gauge
y{dir="in"} 1
# HELP z Func.
# TYPE z gauge
z{cert="mesh"} 1.5
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWrongLabelCountPanics(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("x_total", "x", "a", "b")
	defer func() {
		if recover() == nil {
			t.Fatal("expected panic")
		}
	}()
	c.With("only-one")
}
