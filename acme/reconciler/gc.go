package reconciler

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme/status"
)

// collect garbage-collects a Secret no pod uses.
func (m *Manager) collect(ctx context.Context, key types.NamespacedName, sec *corev1.Secret, st issuerState, now time.Time) (reconcile.Result, error) {
	m.mu.Lock()
	delete(m.told, key)
	m.mu.Unlock()
	if sec == nil {
		m.forget(key)
		return reconcile.Result{}, nil
	}
	grace := policyOf(st.Config).GracePeriod
	ext, _ := status.Decode(sec.Annotations)
	if ext.UnusedSince.IsZero() {
		orig := ext
		ext.UnusedSince = now
		m.log.Info("no pod uses the Secret any more; deleting it after the grace period", "secret", key.String(), "grace", grace)
		return reconcile.Result{RequeueAfter: grace}, m.writeStatus(ctx, sec, orig, ext)
	}
	if deadline := ext.UnusedSince.Add(grace); now.Before(deadline) {
		return requeueAt(now, deadline), nil
	}
	err := m.client.Delete(ctx, sec, client.Preconditions{UID: &sec.UID, ResourceVersion: &sec.ResourceVersion})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return reconcile.Result{Requeue: true}, nil
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("delete unused secret %s: %w", key, err)
	}
	m.log.Info("deleted unused external-certificate Secret", "secret", key.String(), "unused_since", ext.UnusedSince)
	m.forget(key)
	return reconcile.Result{}, nil
}

// forget drops the in-memory state and metrics of a deleted Secret.
func (m *Manager) forget(key types.NamespacedName) {
	expiry.DeleteLabelValues(key.Namespace, key.Name)
	m.failing.mark(key, false)
	m.mu.Lock()
	delete(m.recheck, key)
	delete(m.pending, key)
	delete(m.told, key)
	m.mu.Unlock()
}
