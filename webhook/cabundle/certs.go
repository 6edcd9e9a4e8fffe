// Package cabundle keeps the API server able to verify the webhook: the serving
// certificate itself comes from the internal CA (ca.ServingSource, renewed at
// two thirds of its life), and Patcher writes the CA's roots into the
// caBundle of the MutatingWebhookConfiguration.
package cabundle

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// DefaultInterval is how often the caBundle is checked.
const DefaultInterval = time.Minute

// Patcher keeps caBundle (and, with URL, the client config) of every webhook of
// one MutatingWebhookConfiguration current. It runs on every replica (the
// content is the same whoever writes it), so the first replica up makes the
// webhook usable. RBAC: get/update mutatingwebhookconfigurations by name.
type Patcher struct {
	// Reader reads the configuration directly (no cluster-wide informer).
	Reader client.Reader
	// Writer updates it.
	Writer client.Writer
	// Name of the MutatingWebhookConfiguration.
	Name string
	// URL, when set, replaces each webhook's Service with URL + the webhook's path.
	URL string
	// Bundle returns the current roots PEM.
	Bundle func() []byte
	// Interval between checks; DefaultInterval if 0.
	Interval time.Duration

	patched atomic.Bool
}

// NeedLeaderElection: every replica patches.
func (p *Patcher) NeedLeaderElection() bool { return false }

// Ready returns nil once the configuration carries the bundle.
func (p *Patcher) Ready() error {
	if !p.patched.Load() {
		return fmt.Errorf("caBundle of MutatingWebhookConfiguration %q not patched yet", p.Name)
	}
	return nil
}

// Start patches now and then every Interval until ctx ends.
func (p *Patcher) Start(ctx context.Context) error {
	interval := p.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	log := logf.FromContext(ctx).WithValues("mutatingwebhookconfiguration", p.Name)
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		changed, err := p.Sync(ctx)
		switch {
		case err != nil:
			log.Error(err, "patch caBundle failed; retrying")
			wait = min(interval, 5*time.Second)
			continue
		case changed:
			log.Info("caBundle patched")
		}
		wait = interval
	}
}

// Sync patches the configuration once and reports whether it changed.
func (p *Patcher) Sync(ctx context.Context) (bool, error) {
	bundle := p.Bundle()
	if len(bundle) == 0 {
		return false, fmt.Errorf("no trust bundle yet")
	}
	changed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := p.Reader.Get(ctx, types.NamespacedName{Name: p.Name}, cfg); err != nil {
			return fmt.Errorf("get MutatingWebhookConfiguration %q: %w", p.Name, err)
		}
		changed = false
		for i := range cfg.Webhooks {
			cc := &cfg.Webhooks[i].ClientConfig
			if !bytes.Equal(cc.CABundle, bundle) {
				cc.CABundle = bundle
				changed = true
			}
			if p.URL != "" {
				want := p.URL + hookPath(*cc)
				if cc.Service != nil || cc.URL == nil || *cc.URL != want {
					cc.Service, cc.URL = nil, ptr.To(want)
					changed = true
				}
			}
		}
		if !changed {
			return nil
		}
		if err := p.Writer.Update(ctx, cfg); err != nil {
			return fmt.Errorf("update MutatingWebhookConfiguration %q: %w", p.Name, err)
		}
		return nil
	})
	if err == nil {
		p.patched.Store(true)
	}
	return changed, err
}

// hookPath is the path a webhook's client config points at.
func hookPath(cc admissionregistrationv1.WebhookClientConfig) string {
	if cc.Service != nil && cc.Service.Path != nil {
		return *cc.Service.Path
	}
	if cc.URL != nil {
		if u, err := url.Parse(*cc.URL); err == nil {
			return u.Path
		}
	}
	return ""
}
