package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per caller key, bounded in size: buckets idle
// for longer than idleAfter are dropped when the map is full.
type limiter struct {
	rate      rate.Limit
	burst     int
	max       int
	idleAfter time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(r rate.Limit, burst, max int) *limiter {
	return &limiter{rate: r, burst: burst, max: max, idleAfter: 10 * time.Minute, buckets: map[string]*bucket{}}
}

// allow takes one token from key's bucket at time now.
func (l *limiter) allow(key string, now time.Time) bool {
	if l == nil || l.rate == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// evict drops idle buckets; if none are idle, it drops arbitrary ones
// (a dropped caller starts again with a full bucket, which is harmless).
func (l *limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if now.Sub(b.seen) > l.idleAfter {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max-l.max/10 {
			break
		}
		delete(l.buckets, k)
	}
}
