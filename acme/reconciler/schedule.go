package reconciler

import (
	"crypto/x509"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/renewal"
)

// Defaults for zero fields of issuerconfig.Renewal and issuerconfig.Config (the config
// package fills them in too; the manager does not rely on it).
const (
	defaultMinBackoff       = time.Minute
	defaultMaxBackoff       = 6 * time.Hour
	defaultMaxOrdersPerHour = 3
	defaultGracePeriod      = 24 * time.Hour
	defaultLifetimeFraction = 2.0 / 3
)

// policy is the part of the issuer configuration that decides when to order.
type policy struct {
	MinBackoff, MaxBackoff  time.Duration
	MaxOrdersPerNamePerHour int
	GracePeriod             time.Duration
	LifetimeFraction        float64
}

func policyOf(c issuerconfig.Config) policy {
	p := policy{
		MinBackoff: c.Renewal.MinBackoff.Duration, MaxBackoff: c.Renewal.MaxBackoff.Duration,
		MaxOrdersPerNamePerHour: c.Renewal.MaxOrdersPerNamePerHour,
		GracePeriod:             c.SecretGracePeriod.Duration, LifetimeFraction: c.Renewal.LifetimeFraction,
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = defaultMinBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = defaultMaxBackoff
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = p.MinBackoff
	}
	if p.MaxOrdersPerNamePerHour <= 0 {
		p.MaxOrdersPerNamePerHour = defaultMaxOrdersPerHour
	}
	if p.GracePeriod <= 0 {
		p.GracePeriod = defaultGracePeriod
	}
	if p.LifetimeFraction <= 0 || p.LifetimeFraction >= 1 {
		p.LifetimeFraction = defaultLifetimeFraction
	}
	return p
}

// backoff is the wait after the n-th consecutive failure (n >= 1): MinBackoff
// doubling per failure up to MaxBackoff, then up to 20% earlier at random
// (r in [0,1)) so that many Secrets failing together (DNS provider down) do
// not retry in lockstep, but never below MinBackoff.
func backoff(n int, p policy, r float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := p.MaxBackoff
	if exp := float64(p.MinBackoff) * math.Pow(2, float64(n-1)); exp < float64(p.MaxBackoff) {
		d = time.Duration(exp)
	}
	d -= time.Duration(float64(d) * 0.2 * r)
	return max(d, p.MinBackoff)
}

// Reasons to order, in the order decide checks them; they appear in logs and Events.
const (
	reasonNoCertificate = "no certificate yet"
	reasonNamesChanged  = "certificate names differ from the requested hosts"
	reasonDirectory     = "certificate is from another ACME directory"
	reasonExpired       = "certificate expired"
	reasonForced        = "renewal forced by annotation " + status.ForceRenew
	reasonDue           = "renewal due"
)

// decision says whether to order now, and if not, when to look again.
type decision struct {
	// Need is why a new certificate is needed ("" when the current one is good).
	Need string
	// Order is true when an order may start now (Need != "" and not backing off).
	Order bool
	// Next is when to reconcile again when Order is false: the renewal time,
	// or the end of the backoff. Zero: nothing scheduled.
	Next time.Time
}

// decide is the renewal policy, a pure function of the stored state and now.
// leaf is the parsed certificate of the Secret (nil when empty or unreadable);
// directory is the current issuer's.
func decide(now time.Time, hosts []string, leaf *x509.Certificate, st status.External, directory string, p policy) decision {
	need := ""
	switch {
	case leaf == nil:
		need = reasonNoCertificate
	case !sameNames(leaf, hosts):
		need = reasonNamesChanged
	case st.Directory != "" && st.Directory != directory:
		need = reasonDirectory
	case !now.Before(leaf.NotAfter):
		need = reasonExpired
	case st.ForceRenew != "":
		need = reasonForced
	case !now.Before(renewAt(leaf, st, p)):
		need = reasonDue
	}
	if need == "" {
		return decision{Next: renewAt(leaf, st, p)}
	}
	if now.Before(st.NextAttempt) {
		return decision{Need: need, Next: st.NextAttempt}
	}
	return decision{Need: need, Order: true}
}

// renewAt is the stored renewal time, or LifetimeFraction of the leaf's
// validity when none is stored (a Secret written by hand or an older version).
// A stored time after the leaf's expiry is not trusted.
func renewAt(leaf *x509.Certificate, st status.External, p policy) time.Time {
	if !st.RenewAt.IsZero() && st.RenewAt.Before(leaf.NotAfter) {
		return st.RenewAt
	}
	return lifetimeRenewal(leaf, p)
}

func lifetimeRenewal(leaf *x509.Certificate, p policy) time.Time {
	return renewal.Fraction(p.LifetimeFraction).At(leaf.NotBefore, leaf.NotAfter, 0)
}

// sameNames reports whether the leaf's DNS SANs are exactly hosts (sorted, lower-case).
func sameNames(leaf *x509.Certificate, hosts []string) bool {
	names := make([]string, 0, len(leaf.DNSNames))
	for _, n := range leaf.DNSNames {
		names = append(names, strings.ToLower(n))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	return slices.Equal(names, hosts)
}

// orderLimiter caps orders per DNS name in a sliding hour, across all Secrets
// of all namespaces. It lives in the leader's memory; the persisted
// last-attempt of each Secret is fed back in after a restart or failover.
type orderLimiter struct {
	mu     sync.Mutex
	orders map[string][]time.Time // name -> times of orders in the last hour
}

const limiterWindow = time.Hour

// allow reports whether every host may be ordered at now under max orders per
// name per hour; if not, it returns when the first slot frees up.
func (l *orderLimiter) allow(hosts []string, now time.Time, max int) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var retry time.Time
	for _, h := range hosts {
		recent := l.prune(h, now)
		if len(recent) >= max {
			// The oldest order leaves the window first.
			if at := recent[len(recent)-max].Add(limiterWindow); at.After(retry) {
				retry = at
			}
		}
	}
	return retry.IsZero(), retry
}

// record counts one order for every host at t. Recording a time already
// counted for a host (the persisted last-attempt seen again) is a no-op.
func (l *orderLimiter) record(hosts []string, t time.Time) {
	if t.IsZero() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.orders == nil {
		l.orders = map[string][]time.Time{}
	}
	for _, h := range hosts {
		ts := l.orders[h]
		if slices.ContainsFunc(ts, func(x time.Time) bool { return x.Equal(t) }) {
			continue
		}
		ts = append(ts, t)
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		l.orders[h] = ts
	}
}

// seed feeds a persisted last-attempt in: it counts as an order unless one at
// the same second is already known (annotations keep seconds only).
func (l *orderLimiter) seed(hosts []string, lastAttempt, now time.Time) {
	if lastAttempt.IsZero() || now.Sub(lastAttempt) >= limiterWindow {
		return
	}
	l.mu.Lock()
	known := true
	for _, h := range hosts {
		if !slices.ContainsFunc(l.orders[h], func(x time.Time) bool { return x.Truncate(time.Second).Equal(lastAttempt.Truncate(time.Second)) }) {
			known = false
		}
	}
	l.mu.Unlock()
	if !known {
		l.record(hosts, lastAttempt)
	}
}

// prune drops orders older than the window; l.mu is held.
func (l *orderLimiter) prune(host string, now time.Time) []time.Time {
	ts := l.orders[host]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= limiterWindow {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.orders, host)
	} else {
		l.orders[host] = ts
	}
	return ts
}

// inFlight allows one order per host set at a time, across namespaces.
type inFlight struct {
	mu   sync.Mutex
	sets map[string]bool
}

func (f *inFlight) tryLock(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sets[key] {
		return false
	}
	if f.sets == nil {
		f.sets = map[string]bool{}
	}
	f.sets[key] = true
	return true
}

func (f *inFlight) unlock(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sets, key)
}
