package reconciler

import (
	"context"
	"crypto/x509"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/status"
)

// refreshRenewal asks the issuer again for the renewal time when the last
// answer is due for a recheck (ARI's Retry-After; once after a restart).
func (m *Manager) refreshRenewal(ctx context.Context, key types.NamespacedName, iss Issuer, leaf *x509.Certificate,
	ext status.External, pol policy, now time.Time) (status.External, time.Time) {
	m.mu.Lock()
	rc, asked := m.recheck[key]
	m.mu.Unlock()
	if asked && (rc.IsZero() || now.Before(rc)) {
		return ext, renewAt(leaf, ext, pol)
	}
	ren, err := iss.RenewalTime(ctx, leaf)
	if err != nil {
		m.log.Info("renewal time not refreshed", "secret", key.String(), "error", err.Error())
		m.setRecheck(key, acme.Renewal{RecheckAfter: time.Hour}, now)
		return ext, renewAt(leaf, ext, pol)
	}
	m.setRecheck(key, ren, now)
	if !ren.At.IsZero() {
		ext.RenewAt, ext.RenewalSource = ren.At, ren.Source
	}
	return ext, renewAt(leaf, ext, pol)
}

// setRecheck records when to ask for the renewal time again: after ARI's
// Retry-After, every ariRecheck for ARI without one, never (zero) for
// lifetime-based renewals.
func (m *Manager) setRecheck(key types.NamespacedName, ren acme.Renewal, now time.Time) {
	var at time.Time
	switch {
	case ren.RecheckAfter > 0:
		at = now.Add(ren.RecheckAfter)
	case ren.Source == status.RenewalARI:
		at = now.Add(ariRecheck)
	}
	m.mu.Lock()
	m.recheck[key] = at
	m.mu.Unlock()
}

// recheckAt is when to ask for the renewal time again; zero: not planned.
func (m *Manager) recheckAt(key types.NamespacedName) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recheck[key]
}
