// Package renewal is podtls's one rule for when a certificate is renewed:
// at a fraction of its lifetime, optionally spread over a window so that
// certificates issued together are not renewed together, or at a point of a
// window the issuer chose (ACME Renewal Information). It is pure: the time
// and the random draw are passed in, so every caller is table-testable;
// Draw is the one random source for production callers.
package renewal

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	"time"
)

// Policy renews a certificate at the fraction Start of its lifetime, plus up
// to Spread more, chosen by a random draw.
type Policy struct {
	Start  float64
	Spread float64
}

// The policies of podtls's certificates.
var (
	// Serving: the controller's own serving certificates (CA sign API and
	// webhook), issued by itself, renewed at two thirds of their lifetime.
	Serving = Policy{Start: 2.0 / 3}
	// Mesh: workload certificates, renewed between 60 % and 70 % of their
	// lifetime, so pods started together do not all call the CA together.
	Mesh = Policy{Start: 0.6, Spread: 0.1}
)

// Fraction is the policy "at f of the lifetime", without spread (ACME's
// configured renewal.lifetimeFraction).
func Fraction(f float64) Policy { return Policy{Start: f} }

// At is when a certificate valid from notBefore to notAfter is renewed under
// p; draw in [0,1] (clamped) picks the point in the spread. A certificate
// with no lifetime is renewed at notBefore.
func (p Policy) At(notBefore, notAfter time.Time, draw float64) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	f := p.Start + p.Spread*clamp(draw)
	return notBefore.Add(time.Duration(math.Round(float64(life) * f)))
}

// InWindow is a point of the window [start, end) picked by draw in [0,1]
// (RFC 9773 section 4.2: uniformly at random), never before now and never
// after notAfter, the certificate's expiry.
func InWindow(start, end, now, notAfter time.Time, draw float64) time.Time {
	at := start
	if span := end.Sub(start); span > 0 {
		at = at.Add(time.Duration(math.Round(float64(span) * clamp(draw))))
	}
	if at.Before(now) {
		at = now
	}
	if at.After(notAfter) {
		at = notAfter
	}
	return at
}

// Draw returns a uniformly random number in [0,1) from crypto/rand, the draw
// production callers pass to At and InWindow.
func Draw() float64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0.5 // crypto/rand does not fail on supported platforms
	}
	return float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
}

func clamp(x float64) float64 { return min(max(x, 0), 1) }
