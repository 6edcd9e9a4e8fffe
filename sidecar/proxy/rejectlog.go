package proxy

import (
	"sync"
	"time"
)

// rejectLogEvery is how often, at most, refusals at --max-connections are
// logged: a flood of refused connections must not become a flood of logs.
const rejectLogEvery = 10 * time.Second

// rejectLog counts refusals and says when one is due to be logged: the first
// one, then at most once per rejectLogEvery, with the count since the last log.
type rejectLog struct {
	mu      sync.Mutex
	last    time.Time
	pending int
}

func (r *rejectLog) due(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending++
	if !r.last.IsZero() && now.Sub(r.last) < rejectLogEvery {
		return 0, false
	}
	n := r.pending
	r.last, r.pending = now, 0
	return n, true
}
