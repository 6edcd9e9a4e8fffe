// Package metrics is a tiny Prometheus text-format registry: counters,
// gauges and histograms with fixed label names. The sidecar's binary size and memory are
// headline numbers, so it does not pull in client_golang.
package metrics

import (
	"bufio"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families in registration order.
type Registry struct {
	mu       sync.Mutex
	families []family
}

type family interface {
	write(w *bufio.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) add(f family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.families = append(r.families, f)
}

// WriteText writes every family in the Prometheus text exposition format 0.0.4.
func (r *Registry) WriteText(w io.Writer) error {
	r.mu.Lock()
	fams := append([]family(nil), r.families...)
	r.mu.Unlock()
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		f.write(bw)
	}
	return bw.Flush()
}

// Counter is a monotonically increasing integer.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current value.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is an integer that goes up and down.
type Gauge struct{ v atomic.Int64 }

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Set stores v.
func (g *Gauge) Set(v int64) { g.v.Store(v) }

// Value returns the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

type header struct {
	name, help, typ string
	labels          []string
}

func (h header) writeHeader(w *bufio.Writer) {
	w.WriteString("# HELP " + h.name + " " + escapeHelp(h.help) + "\n")
	w.WriteString("# TYPE " + h.name + " " + h.typ + "\n")
}

// vec holds one child per combination of label values.
type vec[T any] struct {
	header
	mu       sync.RWMutex
	children map[string]*T
	values   map[string][]string
	newChild func() *T // nil: new(T)
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != len(v.labels) {
		panic("metrics: " + v.name + ": wrong number of label values") // programming error, caught by tests
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	c := v.children[key]
	v.mu.RUnlock()
	if c != nil {
		return c
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.children[key]; c == nil {
		if v.newChild != nil {
			c = v.newChild()
		} else {
			c = new(T)
		}
		v.children[key] = c
		v.values[key] = append([]string(nil), values...)
	}
	return c
}

func (v *vec[T]) each(fn func(values []string, c *T)) {
	v.mu.RLock()
	keys := make([]string, 0, len(v.children))
	for k := range v.children {
		keys = append(keys, k)
	}
	v.mu.RUnlock()
	sort.Strings(keys)
	for _, k := range keys {
		v.mu.RLock()
		c, vals := v.children[k], v.values[k]
		v.mu.RUnlock()
		fn(vals, c)
	}
}

func newVec[T any](name, help, typ string, labels []string) *vec[T] {
	return &vec[T]{header: header{name: name, help: help, typ: typ, labels: labels}, children: map[string]*T{}, values: map[string][]string{}}
}

// CounterVec is a family of counters partitioned by labels.
type CounterVec struct{ v *vec[Counter] }

// NewCounterVec registers a counter family. Names should end in _total.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	c := &CounterVec{v: newVec[Counter](name, help, "counter", labels)}
	r.add(c)
	return c
}

// With returns the counter for the label values, creating it at zero.
func (c *CounterVec) With(values ...string) *Counter { return c.v.with(values) }

func (c *CounterVec) write(w *bufio.Writer) {
	c.v.writeHeader(w)
	c.v.each(func(vals []string, ctr *Counter) {
		writeSample(w, c.v.name, c.v.labels, vals, float64(ctr.Value()))
	})
}

// GaugeVec is a family of gauges partitioned by labels.
type GaugeVec struct{ v *vec[Gauge] }

// NewGaugeVec registers a gauge family.
func (r *Registry) NewGaugeVec(name, help string, labels ...string) *GaugeVec {
	g := &GaugeVec{v: newVec[Gauge](name, help, "gauge", labels)}
	r.add(g)
	return g
}

// With returns the gauge for the label values, creating it at zero.
func (g *GaugeVec) With(values ...string) *Gauge { return g.v.with(values) }

func (g *GaugeVec) write(w *bufio.Writer) {
	g.v.writeHeader(w)
	g.v.each(func(vals []string, ga *Gauge) {
		writeSample(w, g.v.name, g.v.labels, vals, float64(ga.Value()))
	})
}

// Sample is one value of a GaugeFunc, with its label values.
type Sample struct {
	Labels []string
	Value  float64
}

type gaugeFunc struct {
	header
	fn func() []Sample
}

// NewGaugeFunc registers a gauge family whose samples are computed at scrape
// time (for example certificate expiry, which changes on reload).
func (r *Registry) NewGaugeFunc(name, help string, labels []string, fn func() []Sample) {
	r.add(&gaugeFunc{header: header{name: name, help: help, typ: "gauge", labels: labels}, fn: fn})
}

func (g *gaugeFunc) write(w *bufio.Writer) {
	g.writeHeader(w)
	for _, s := range g.fn() {
		if len(s.Labels) != len(g.labels) {
			continue
		}
		writeSample(w, g.name, g.labels, s.Labels, s.Value)
	}
}

func writeSample(w *bufio.Writer, name string, labels, values []string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l + `="` + escapeLabel(values[i]) + `"`)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
