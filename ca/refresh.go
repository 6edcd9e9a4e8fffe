package ca

import (
	"bytes"
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"
)

// DefaultRefreshInterval is how often a Refresher re-reads the CA Secret: a
// root rotation step reaches every replica (and from there the trust
// bundles and ClusterTrustBundles) within a minute, for one GET per replica
// and minute.
const DefaultRefreshInterval = time.Minute

// Refresher keeps an Authority in step with its Secret while the controller
// runs: it re-reads the Secret periodically, so a generated intermediate is
// renewed 30 days before expiry even without a restart, and an operator's
// change (a new user-provided intermediate, extra roots published in
// ca-bundle.crt for a root rotation) takes effect without one. Replicas may
// all run it: renewal uses optimistic concurrency on the Secret, and a replica
// that loses adopts the winner's intermediate on its next read.
//
// It is a controller-runtime manager.Runnable without leader election.
type Refresher struct {
	Authority *Authority
	Kube      kubernetes.Interface
	Secret    SecretOptions
	// Interval between reads; DefaultRefreshInterval if zero.
	Interval time.Duration
	// OnChange, if set, is called after new material was installed, e.g. to
	// republish the trust bundle.
	OnChange func(*Material)
}

// NeedLeaderElection tells controller-runtime to run the refresher on every replica.
func (r *Refresher) NeedLeaderElection() bool { return false }

// Start refreshes until ctx ends. Errors are logged and retried at the next
// tick: the current material keeps signing meanwhile.
func (r *Refresher) Start(ctx context.Context) error {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultRefreshInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Refresh(ctx)
		}
	}
}

// Refresh reads the Secret once and installs its material if it differs from
// the current one. It reports whether the material changed.
func (r *Refresher) Refresh(ctx context.Context) bool {
	log := r.Secret.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := LoadOrCreate(ctx, r.Kube, r.Secret)
	if err != nil {
		log.Error("refresh CA from its Secret failed; keeping the current CA", "err", err)
		return false
	}
	cur := r.Authority.Material()
	if sameMaterial(cur, m) {
		return false
	}
	if err := r.Authority.SetMaterial(m); err != nil {
		log.Error("CA Secret holds unusable material; keeping the current CA", "err", err)
		return false
	}
	log.Info("CA material changed", "intermediate_not_after", m.Intermediate.NotAfter, "roots", len(m.bundle()))
	if r.OnChange != nil {
		r.OnChange(m)
	}
	return true
}

func sameMaterial(a, b *Material) bool {
	return a.Intermediate.Equal(b.Intermediate) &&
		bytes.Equal(a.ChainPEM(), b.ChainPEM()) &&
		bytes.Equal(a.TrustBundlePEM(), b.TrustBundlePEM())
}
