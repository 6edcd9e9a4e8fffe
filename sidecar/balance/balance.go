// Package balance picks the endpoint of each request an http-mode outbound
// listener forwards: power of two choices over peak-EWMA latency weighted by
// the requests in flight (Linkerd's and Finagle's algorithm), with endpoints
// that failed to connect ejected for a growing time and readmitted when it
// ends. It is pure: time and randomness are injected, no I/O.
package balance

import (
	"errors"
	"math"
	"slices"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultDecay     = time.Second
	DefaultPenalty   = time.Second
	DefaultFloor     = 5 * time.Millisecond
	DefaultEjectBase = time.Second
	DefaultEjectMax  = 30 * time.Second
)

// ErrNoEndpoints means the balancer has neither endpoints nor a fallback.
var ErrNoEndpoints = errors.New("balance: no endpoints")

// Options tune a Balancer; zero values take the defaults.
type Options struct {
	// Decay is the EWMA's time constant: an observation this old weighs 1/e.
	// It is how long a slow answer keeps an endpoint out of favour (a 30 ms
	// blip next to 5 ms endpoints: about 1.8 Decay). Linkerd uses 10 s; 1 s
	// forgets a cold start (first connection, the app's first request) in
	// seconds instead of starving the endpoint for most of a minute.
	Decay time.Duration
	// Penalty is the latency an endpoint is charged per request in flight
	// before its first answer: a new endpoint costs nothing while idle, so it
	// is tried at once, and gets one request at a time until it has answered
	// (a guess of its latency would starve it if too high and flood it if
	// too low).
	Penalty time.Duration
	// Floor is the latency below which endpoints count as equally fast:
	// differences of a few hundred microseconds are scheduling noise, and
	// weighing them would let one slow answer starve an endpoint. Between
	// endpoints under the floor the choice is least-request (Envoy's).
	Floor time.Duration
	// EjectBase is how long an endpoint that failed to connect is left out;
	// it doubles with each further failure in a row, up to EjectMax.
	EjectBase, EjectMax time.Duration
	// Now is the clock (time.Now if nil); Intn returns a random int in
	// [0, n) (math/rand/v2 if nil).
	Now  func() time.Time
	Intn func(n int) int
}

// Balancer holds the endpoints of one upstream. Safe for concurrent use.
type Balancer struct {
	opts     Options
	fallback string

	mu  sync.Mutex
	eps []*endpoint
}

type endpoint struct {
	addr     string
	inflight int
	ewma     float64   // nanoseconds
	stamp    time.Time // of the last observation; zero: none yet
	fails    int
	until    time.Time // ejected until
}

// New returns a Balancer that uses fallback (the upstream's own HOST:PORT)
// while it knows no endpoints; an empty fallback makes Pick fail instead.
func New(fallback string, opts Options) *Balancer {
	if opts.Decay <= 0 {
		opts.Decay = DefaultDecay
	}
	if opts.Floor <= 0 {
		opts.Floor = DefaultFloor
	}
	if opts.Penalty <= 0 {
		opts.Penalty = DefaultPenalty
	}
	if opts.EjectBase <= 0 {
		opts.EjectBase = DefaultEjectBase
	}
	if opts.EjectMax <= 0 {
		opts.EjectMax = DefaultEjectMax
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Intn == nil {
		opts.Intn = defaultIntn
	}
	return &Balancer{opts: opts, fallback: fallback}
}

// Update replaces the endpoint set with addrs (HOST:PORT). Endpoints that
// stay keep their latency, load and ejection state; nil or empty addrs
// returns to the fallback.
func (b *Balancer) Update(addrs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := make(map[string]*endpoint, len(b.eps))
	for _, e := range b.eps {
		old[e.addr] = e
	}
	next := make([]*endpoint, 0, len(addrs))
	for _, a := range addrs {
		e, ok := old[a]
		if !ok {
			e = &endpoint{addr: a}
		}
		delete(old, a) // a duplicate address is kept once
		if ok || !slices.ContainsFunc(next, func(n *endpoint) bool { return n.addr == a }) {
			next = append(next, e)
		}
	}
	b.eps = next
}

// Endpoints returns the current addresses, in Update's order.
func (b *Balancer) Endpoints() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, len(b.eps))
	for i, e := range b.eps {
		out[i] = e.addr
	}
	return out
}

// Ejected returns the addresses left out at the moment.
func (b *Balancer) Ejected() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	var out []string
	for _, e := range b.eps {
		if now.Before(e.until) {
			out = append(out, e.addr)
		}
	}
	return out
}

// Pick chooses the endpoint of one request, excluding the addresses in
// avoid (those a retry already tried), and counts the request in flight
// until the returned Pick's Done or Failed.
func (b *Balancer) Pick(avoid ...string) (*Pick, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	var admitted, usable []*endpoint
	for _, e := range b.eps {
		if slices.Contains(avoid, e.addr) {
			continue
		}
		usable = append(usable, e)
		if !now.Before(e.until) {
			admitted = append(admitted, e)
		}
	}
	if len(admitted) == 0 {
		// Every endpoint is ejected: try them anyway (a request that may
		// work beats one that surely fails), as Envoy's panic mode does.
		admitted = usable
	}
	var e *endpoint
	switch len(admitted) {
	case 0:
		// The fallback stands in only for an unknown endpoint set, not for
		// endpoints a retry has all tried.
		if len(b.eps) > 0 || b.fallback == "" || slices.Contains(avoid, b.fallback) {
			return nil, ErrNoEndpoints
		}
		return &Pick{Addr: b.fallback, b: b}, nil
	case 1:
		e = admitted[0]
	default:
		i := b.opts.Intn(len(admitted))
		j := b.opts.Intn(len(admitted) - 1)
		if j >= i {
			j++
		}
		e = admitted[i]
		if o := admitted[j]; b.cost(o, now) < b.cost(e, now) {
			e = o
		}
	}
	e.inflight++
	return &Pick{Addr: e.addr, b: b, e: e, start: now}, nil
}

// cost is the endpoint's peak-EWMA latency, decayed toward zero for the
// time since its last answer (so an endpoint left alone after a slow answer
// is tried again) and at least Floor, times the load it would carry; an
// endpoint that never answered is charged Penalty per request in flight.
func (b *Balancer) cost(e *endpoint, now time.Time) float64 {
	if e.stamp.IsZero() {
		return float64(b.opts.Penalty) * float64(e.inflight)
	}
	lat := e.ewma * math.Exp(-float64(max(now.Sub(e.stamp), 0))/float64(b.opts.Decay))
	return max(lat, float64(b.opts.Floor)) * float64(e.inflight+1)
}

// Pick is one request's endpoint. Call exactly one of Done or Failed.
type Pick struct {
	Addr  string
	b     *Balancer
	e     *endpoint // nil for the fallback
	start time.Time
	once  sync.Once
}

// Done ends the request: rtt, when positive, is its latency to the answer's
// headers, fed into the endpoint's peak EWMA; a success clears the
// endpoint's failure count.
func (p *Pick) Done(rtt time.Duration) {
	p.once.Do(func() {
		if p.e == nil {
			return
		}
		b := p.b
		b.mu.Lock()
		defer b.mu.Unlock()
		e := p.e
		e.inflight--
		e.fails, e.until = 0, time.Time{}
		if rtt > 0 {
			e.observe(float64(rtt), b.opts.Now(), b.opts.Decay)
		}
	})
}

// Release ends the request without a verdict on the endpoint (the client
// went away, or the request failed after the endpoint was reached).
func (p *Pick) Release() {
	p.once.Do(func() {
		if p.e == nil {
			return
		}
		p.b.mu.Lock()
		p.e.inflight--
		p.b.mu.Unlock()
	})
}

// Failed ends a request whose connection to the endpoint failed: the
// endpoint is ejected for EjectBase, doubled for each failure in a row.
func (p *Pick) Failed() {
	p.once.Do(func() {
		if p.e == nil {
			return
		}
		b := p.b
		b.mu.Lock()
		defer b.mu.Unlock()
		e := p.e
		e.inflight--
		e.fails++
		d := b.opts.EjectBase << min(e.fails-1, 16)
		if d <= 0 || d > b.opts.EjectMax {
			d = b.opts.EjectMax
		}
		e.until = b.opts.Now().Add(d)
	})
}

// observe folds rtt into the peak EWMA: a slower answer is taken at once, a
// faster one decays the average toward it with the time since the last one.
func (e *endpoint) observe(rtt float64, now time.Time, decay time.Duration) {
	if rtt > e.ewma || e.stamp.IsZero() {
		e.ewma, e.stamp = rtt, now
		return
	}
	elapsed := max(now.Sub(e.stamp), 0)
	w := math.Exp(-float64(elapsed) / float64(decay))
	e.ewma = e.ewma*w + rtt*(1-w)
	e.stamp = now
}
