package reconciler

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme/status"
)

// copySource is a valid certificate for the same hosts in another namespace.
type copySource struct {
	key  types.NamespacedName
	sec  *corev1.Secret
	ext  status.External
	leaf *x509.Certificate
}

// findCopy looks for a Secret of the same name (the same hosts) in another
// namespace whose certificate is from the current directory, valid, not due
// for renewal, and allowed for both namespaces. The candidate is re-read
// from the API server, so a certificate just renewed there is seen.
func (m *Manager) findCopy(ctx context.Context, key types.NamespacedName, hosts []string, st issuerState, pol policy, now time.Time) *copySource {
	list := &corev1.SecretList{}
	if err := m.client.List(ctx, list, client.MatchingLabels(SecretSelector())); err != nil {
		m.log.Info("list secrets for a copy", "error", err.Error())
		return nil
	}
	var best *copySource
	for i := range list.Items {
		s := &list.Items[i]
		if s.Name != key.Name || s.Namespace == key.Namespace {
			continue
		}
		other := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		fresh := &corev1.Secret{}
		if err := m.api.Get(ctx, other, fresh); err != nil || !managed(fresh) {
			continue
		}
		c := copyCandidate(fresh, hosts, st.Issuer.Directory(), now, pol)
		if c == nil {
			continue
		}
		ok := true
		for _, h := range hosts {
			ok = ok && st.Config.Allowed(other.Namespace, h)
		}
		if ok && (best == nil || c.leaf.NotAfter.After(best.leaf.NotAfter)) {
			c.key = other
			best = c
		}
	}
	return best
}

// copyCandidate checks one Secret as a copy source (pure but for parsing).
func copyCandidate(s *corev1.Secret, hosts []string, directory string, now time.Time, pol policy) *copySource {
	ext, err := status.Decode(s.Annotations)
	if err != nil || ext.Directory != directory {
		return nil
	}
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	leaf := parseLeaf(crt)
	if leaf == nil || !sameNames(leaf, hosts) || !validPair(crt, key) {
		return nil
	}
	if now.Before(leaf.NotBefore) || !now.Before(renewAt(leaf, ext, pol)) || !now.Before(leaf.NotAfter) || ext.ForceRenew != "" {
		return nil
	}
	return &copySource{sec: s, ext: ext, leaf: leaf}
}

// copyFrom stores the source's certificate and key in sec.
func (m *Manager) copyFrom(ctx context.Context, key types.NamespacedName, sec *corev1.Secret, ext status.External,
	src *copySource, users []*corev1.Pod, renewed bool) (reconcile.Result, error) {
	now := m.opts.Now()
	ext.Directory, ext.CertIssuer, ext.Serial = src.ext.Directory, src.ext.CertIssuer, src.ext.Serial
	ext.NotBefore, ext.NotAfter = src.leaf.NotBefore, src.leaf.NotAfter
	ext.RenewAt, ext.RenewalSource = src.ext.RenewAt, src.ext.RenewalSource
	ext.LastSuccess = now
	ext.LastError, ext.Failures, ext.NextAttempt, ext.UnusedSince = "", 0, time.Time{}, time.Time{}
	sec.Data = map[string][]byte{
		corev1.TLSCertKey:       src.sec.Data[corev1.TLSCertKey],
		corev1.TLSPrivateKeyKey: src.sec.Data[corev1.TLSPrivateKeyKey],
	}
	if err := m.update(ctx, sec, ext); err != nil {
		return reconcile.Result{}, err
	}
	ordersTotal.WithLabelValues("copied").Inc()
	m.failing.mark(key, false)
	m.export(key, src.leaf)
	m.log.Info("certificate copied from another namespace instead of a new order", "secret", key.String(), "from", src.key.Namespace, "serial", ext.Serial)
	reason, verb := status.EventIssued, "issued"
	if renewed {
		reason, verb = status.EventRenewed, "renewed"
	}
	m.notify(users, corev1.EventTypeNormal, reason, fmt.Sprintf("certificate for %s %s by copying the valid one of namespace %s (serial %s, valid until %s) instead of a new order",
		strings.Join(ext.Hosts, ","), verb, src.key.Namespace, ext.Serial, ext.NotAfter.UTC().Format(time.RFC3339)))
	m.announced(key, users, ext.Serial)
	return requeueAt(now, renewAt(src.leaf, ext, policy{LifetimeFraction: defaultLifetimeFraction})), nil
}
