package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(fallback string, seed uint64) (*Balancer, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	r := rand.New(rand.NewPCG(seed, 1))
	return New(fallback, Options{Now: c.now, Intn: r.IntN}), c
}

func TestFallback(t *testing.T) {
	tests := []struct {
		name     string
		fallback string
		eps      []string
		avoid    []string
		want     string
		wantErr  bool
	}{
		{name: "unknown set uses the fallback", fallback: "svc:8443", want: "svc:8443"},
		{name: "no fallback", wantErr: true},
		{name: "fallback already tried", fallback: "svc:8443", avoid: []string{"svc:8443"}, wantErr: true},
		{name: "known endpoints win", fallback: "svc:8443", eps: []string{"10.0.0.1:8443"}, want: "10.0.0.1:8443"},
		{name: "all endpoints tried: no fallback", fallback: "svc:8443", eps: []string{"10.0.0.1:8443"}, avoid: []string{"10.0.0.1:8443"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := newTest(tt.fallback, 1)
			b.Update(tt.eps)
			p, err := b.Pick(tt.avoid...)
			if tt.wantErr {
				if !errors.Is(err, ErrNoEndpoints) {
					t.Fatalf("Pick = %v, %v; want ErrNoEndpoints", p, err)
				}
				return
			}
			if err != nil || p.Addr != tt.want {
				t.Fatalf("Pick = %v, %v; want %s", p, err, tt.want)
			}
			p.Done(time.Millisecond)
		})
	}
}

// Equal endpoints share the requests evenly.
func TestSpreadsEvenly(t *testing.T) {
	b, c := newTest("", 7)
	eps := []string{"a:1", "b:1", "c:1"}
	b.Update(eps)
	counts := map[string]int{}
	const n = 3000
	for range n {
		p, err := b.Pick()
		if err != nil {
			t.Fatal(err)
		}
		counts[p.Addr]++
		c.advance(time.Millisecond)
		p.Done(2 * time.Millisecond)
	}
	for _, e := range eps {
		if got := counts[e]; math.Abs(float64(got)-n/3) > 0.2*n/3 {
			t.Errorf("%s got %d of %d requests, want %d ±20%%: %v", e, got, n, n/3, counts)
		}
	}
}

// A slow endpoint gets fewer requests; one with requests piling up too.
func TestPrefersFastAndIdle(t *testing.T) {
	b, c := newTest("", 3)
	b.Update([]string{"fast:1", "slow:1"})
	counts := map[string]int{}
	for range 2000 {
		p, _ := b.Pick()
		counts[p.Addr]++
		c.advance(time.Millisecond)
		if p.Addr == "slow:1" {
			p.Done(50 * time.Millisecond)
		} else {
			p.Done(6 * time.Millisecond)
		}
	}
	if counts["slow:1"]*10 > counts["fast:1"] {
		t.Errorf("slow endpoint got %d requests, fast %d: want the slow one under 10%%", counts["slow:1"], counts["fast:1"])
	}

	// Under the floor, latency differences do not count: the spread is even.
	b3, c3 := newTest("", 9)
	b3.Update([]string{"a:1", "b:1"})
	even := map[string]int{}
	for range 2000 {
		p, _ := b3.Pick()
		even[p.Addr]++
		c3.advance(time.Millisecond)
		if p.Addr == "a:1" {
			p.Done(4 * time.Millisecond)
		} else {
			p.Done(100 * time.Microsecond)
		}
	}
	if math.Abs(float64(even["a:1"]-even["b:1"])) > 200 {
		t.Errorf("endpoints under the %v floor got %v, want an even spread", DefaultFloor, even)
	}

	// A slow answer long ago no longer counts: the endpoint is tried again.
	b4, c4 := newTest("", 13)
	b4.Update([]string{"a:1", "b:1"})
	answered := map[string]bool{}
	for len(answered) < 2 {
		p, _ := b4.Pick()
		answered[p.Addr] = true
		if p.Addr == "a:1" {
			p.Done(time.Second)
		} else {
			p.Done(6 * time.Millisecond)
		}
	}
	c4.advance(10 * DefaultDecay)
	seen := false
	for range 50 {
		p, _ := b4.Pick()
		seen = seen || p.Addr == "a:1"
		p.Release()
	}
	if !seen {
		t.Errorf("an endpoint slow %v ago was never tried again", 10*DefaultDecay)
	}

	// Equal latency, but requests in flight stay on a: b is chosen.
	b2, _ := newTest("", 5)
	b2.Update([]string{"a:1", "b:1"})
	var held []*Pick
	for range 4 {
		p, _ := b2.Pick()
		held = append(held, p)
	}
	per := map[string]int{}
	for _, p := range held {
		per[p.Addr]++
	}
	if per["a:1"] != 2 || per["b:1"] != 2 {
		t.Errorf("4 requests in flight over 2 idle endpoints landed %v, want 2 each", per)
	}
}

func TestEjectionAndReadmission(t *testing.T) {
	b, c := newTest("", 11)
	b.Update([]string{"a:1", "b:1"})
	fail := func() {
		t.Helper()
		for {
			p, _ := b.Pick()
			if p.Addr == "a:1" {
				p.Failed()
				return
			}
			p.Done(time.Millisecond)
		}
	}
	fail()
	if got := b.Ejected(); !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("Ejected = %v, want [a:1]", got)
	}
	for range 100 {
		p, _ := b.Pick()
		if p.Addr != "b:1" {
			t.Fatalf("picked ejected endpoint %s", p.Addr)
		}
		p.Done(time.Millisecond)
	}
	c.advance(DefaultEjectBase) // readmitted
	if len(b.Ejected()) != 0 {
		t.Fatalf("still ejected after %v", DefaultEjectBase)
	}
	// A second failure in a row doubles the time out.
	fail()
	c.advance(DefaultEjectBase)
	if got := b.Ejected(); !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("second failure: Ejected after %v = %v, want [a:1] (2s ejection)", DefaultEjectBase, got)
	}
	c.advance(DefaultEjectBase)
	// A success clears the count.
	for {
		p, _ := b.Pick()
		p.Done(time.Millisecond)
		if p.Addr == "a:1" {
			break
		}
	}
	fail()
	c.advance(DefaultEjectBase)
	if len(b.Ejected()) != 0 {
		t.Fatalf("failure count was not reset by a success: %v", b.Ejected())
	}
	// Capped at EjectMax.
	for range 40 {
		fail()
		c.advance(DefaultEjectMax)
	}
}

// With every endpoint ejected, requests still go out (panic mode), and a
// retry never gets an endpoint it already tried.
func TestAllEjectedAndAvoid(t *testing.T) {
	b, _ := newTest("svc:1", 2)
	b.Update([]string{"a:1", "b:1"})
	for _, want := range []string{"a:1", "b:1"} {
		for {
			p, _ := b.Pick()
			if p.Addr == want {
				p.Failed()
				break
			}
			p.Done(time.Millisecond)
		}
	}
	p, err := b.Pick()
	if err != nil {
		t.Fatalf("all ejected: Pick = %v, want one of them", err)
	}
	p.Release()
	p, err = b.Pick("a:1")
	if err != nil || p.Addr != "b:1" {
		t.Fatalf("Pick(avoid a) = %v, %v; want b:1", p, err)
	}
	p.Release()
	if _, err := b.Pick("a:1", "b:1"); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("Pick(avoid all) = %v, want ErrNoEndpoints", err)
	}
}

// Update keeps the state of endpoints that stay and drops duplicates.
func TestUpdateKeepsState(t *testing.T) {
	b, _ := newTest("", 4)
	b.Update([]string{"a:1", "b:1"})
	var p *Pick
	for {
		p, _ = b.Pick()
		if p.Addr == "a:1" {
			break
		}
		p.Release()
	}
	p.Failed()
	b.Update([]string{"a:1", "c:1", "c:1"})
	if got := b.Endpoints(); !slices.Equal(got, []string{"a:1", "c:1"}) {
		t.Fatalf("Endpoints = %v", got)
	}
	if got := b.Ejected(); !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("Ejected after Update = %v, want [a:1] (state kept)", got)
	}
	// Done twice, or Done after Failed, counts once.
	q, _ := b.Pick()
	q.Done(time.Millisecond)
	q.Done(time.Millisecond)
	q.Failed()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.eps {
		if e.inflight != 0 {
			t.Errorf("%s inflight = %d after its requests ended", e.addr, e.inflight)
		}
	}
}

func TestPeakEWMA(t *testing.T) {
	e := &endpoint{}
	now := time.Unix(0, 0)
	e.observe(float64(5*time.Millisecond), now, DefaultDecay)
	e.observe(float64(100*time.Millisecond), now, DefaultDecay)
	if e.ewma != float64(100*time.Millisecond) {
		t.Fatalf("a slower answer is taken at once: ewma = %v", time.Duration(e.ewma))
	}
	e.observe(float64(time.Millisecond), now.Add(DefaultDecay), DefaultDecay)
	want := 100*math.Exp(-1) + 1*(1-math.Exp(-1))
	if got := e.ewma / float64(time.Millisecond); math.Abs(got-want) > 1e-9 {
		t.Fatalf("after one decay constant ewma = %vms, want %vms", got, want)
	}
}

func ExampleBalancer() {
	b := New("preference.demo.svc:8443", Options{})
	p, _ := b.Pick() // no endpoints known yet: the Service's own address
	fmt.Println(p.Addr)
	p.Done(0)
	b.Update([]string{"10.244.0.7:8443"})
	p, _ = b.Pick()
	fmt.Println(p.Addr)
	p.Done(3 * time.Millisecond)
	// Output:
	// preference.demo.svc:8443
	// 10.244.0.7:8443
}
