package reconciler

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/status"
)

// order runs one ACME order and records its outcome.
func (m *Manager) order(ctx context.Context, key types.NamespacedName, sec *corev1.Secret, ext status.External,
	leaf *x509.Certificate, hosts []string, users []*corev1.Pod, st issuerState, pol policy, need string) (reconcile.Result, error) {
	log := m.log.WithValues("secret", key.String(), "hosts", hosts)
	now := m.opts.Now()
	// Persist the attempt as if it were going to fail: a leader dying
	// mid-order leaves a backoff for its successor.
	ext.LastAttempt = now
	ext.NextAttempt = now.Add(backoff(ext.Failures+1, pol, m.opts.Rand()))
	if err := m.update(ctx, sec, ext); err != nil {
		return reconcile.Result{}, err
	}
	m.limiter.record(hosts, now)
	var replaces *x509.Certificate
	if leaf != nil && ext.Failures == 0 && ext.Directory == st.Issuer.Directory() {
		replaces = leaf
	}
	log.Info("ordering certificate", "reason", need, "replaces", replaces != nil)

	start := time.Now()
	done := make(chan obtained, 1)
	go func() {
		cert, err := m.obtain(ctx, st, hosts, replaces)
		done <- obtained{cert, err}
	}()
	o := attempt{key: key, sec: sec, ext: ext, renewed: leaf != nil, hosts: hosts, users: users, st: st, pol: pol, start: start}
	select {
	case r := <-done:
		return m.finish(ctx, o, r)
	case <-ctx.Done():
		select {
		case r := <-done:
			return m.finish(ctx, o, r)
		default:
		}
		// Shutdown or lost leadership: return at once so that the lease is
		// released promptly. An issuer that does not stop at once (lego's
		// DNS propagation wait) finishes in the background; a certificate it
		// still gets is written then, guarded by the resourceVersion. The
		// backoff persisted above keeps the successor from ordering at once.
		log.Info("order interrupted; not waiting for it", "next_attempt", ext.NextAttempt)
		go func() {
			if r := <-done; r.err == nil {
				_, _ = m.finish(ctx, o, r)
			}
		}()
		return reconcile.Result{}, nil
	}
}

// attempt is one order in progress.
type attempt struct {
	key     types.NamespacedName
	sec     *corev1.Secret
	ext     status.External // with the attempt recorded
	renewed bool            // a certificate was stored before
	hosts   []string
	users   []*corev1.Pod
	st      issuerState
	pol     policy
	start   time.Time
}

// obtained is the issuer's answer.
type obtained struct {
	cert *acme.Certificate
	err  error
}

// finish records the outcome of an order. Writes use a context detached
// from ctx: the result of an order must not be lost to a cancellation.
func (m *Manager) finish(ctx context.Context, o attempt, r obtained) (reconcile.Result, error) {
	log := m.log.WithValues("secret", o.key.String(), "hosts", o.hosts)
	took := time.Since(o.start)
	orderDuration.Observe(took.Seconds())
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	ext, err := o.ext, r.err
	if err != nil && ctx.Err() != nil {
		// Shutdown or lost leadership, not the server's fault: no failure
		// is counted; the backoff persisted before the order stays.
		log.Info("order interrupted", "error", err.Error(), "next_attempt", ext.NextAttempt)
		return reconcile.Result{}, nil
	}
	if err != nil {
		ordersTotal.WithLabelValues("failure").Inc()
		ext.Failures++
		ext.LastError = shortError(err)
		if strings.Contains(err.Error(), acmeAccountDoesNotExist) {
			// The server forgot the account (a reset test server, a
			// deactivation): a new issuer looks it up or registers again.
			m.config.rebuild(o.st.gen)
		}
		m.failing.mark(o.key, true)
		log.Error(err, "order failed", "failures", ext.Failures, "next_attempt", ext.NextAttempt, "took", took)
		m.notify(o.users, corev1.EventTypeWarning, status.EventFailed,
			fmt.Sprintf("certificate for %s: attempt %d failed, next at %s: %s", strings.Join(o.hosts, ","), ext.Failures,
				ext.NextAttempt.UTC().Format(time.RFC3339), ext.LastError))
		if err := m.update(wctx, o.sec, ext); err != nil {
			return reconcile.Result{}, err
		}
		return requeueAt(m.opts.Now(), ext.NextAttempt), nil
	}
	cert := r.cert
	ordersTotal.WithLabelValues("success").Inc()
	log.Info("certificate issued", "serial", serialHex(cert.Leaf), "not_after", cert.Leaf.NotAfter, "took", took)
	ren, err := o.st.Issuer.RenewalTime(wctx, cert.Leaf)
	if err != nil {
		log.Error(err, "renewal time; using the lifetime fraction")
		ren = acme.Renewal{At: lifetimeRenewal(cert.Leaf, o.pol), Source: status.RenewalLifetime}
	}
	return m.store(wctx, o.key, o.sec, ext, pendingCert{hosts: o.hosts, cert: cert, renewal: ren,
		directory: o.st.Issuer.Directory(), renewed: o.renewed}, o.users)
}

// obtain makes sure the account exists, then orders, within OrderTimeout.
func (m *Manager) obtain(ctx context.Context, st issuerState, hosts []string, replaces *x509.Certificate) (*acme.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.OrderTimeout)
	defer cancel()
	if !st.accountOK {
		if _, err := st.Issuer.EnsureAccount(ctx); err != nil {
			return nil, fmt.Errorf("ACME account: %w", err)
		}
		m.config.accountReady(st.gen)
	}
	cert, err := st.Issuer.Obtain(ctx, hosts, replaces)
	if err != nil {
		return nil, err
	}
	if cert == nil || cert.Leaf == nil || len(cert.ChainPEM) == 0 || len(cert.KeyPEM) == 0 {
		return nil, errors.New("issuer returned an empty certificate")
	}
	if !sameNames(cert.Leaf, hosts) {
		return nil, fmt.Errorf("issued certificate names %v, want %v", cert.Leaf.DNSNames, hosts)
	}
	return cert, nil
}

// store writes an issued certificate and its status. If the write fails,
// the certificate waits in memory for the next reconcile.
func (m *Manager) store(ctx context.Context, key types.NamespacedName, sec *corev1.Secret, ext status.External, p pendingCert, users []*corev1.Pod) (reconcile.Result, error) {
	now := m.opts.Now()
	leaf := p.cert.Leaf
	ext.Directory = p.directory
	ext.CertIssuer = leaf.Issuer.String()
	ext.Serial = serialHex(leaf)
	ext.NotBefore, ext.NotAfter = leaf.NotBefore, leaf.NotAfter
	ext.RenewAt, ext.RenewalSource = p.renewal.At, p.renewal.Source
	ext.LastSuccess = now
	ext.LastError, ext.Failures, ext.NextAttempt, ext.ForceRenew, ext.UnusedSince = "", 0, time.Time{}, "", time.Time{}
	sec.Data = map[string][]byte{corev1.TLSCertKey: p.cert.ChainPEM, corev1.TLSPrivateKeyKey: p.cert.KeyPEM}
	if err := m.update(ctx, sec, ext); err != nil {
		m.mu.Lock()
		m.pending[key] = p
		m.mu.Unlock()
		m.log.Info("certificate kept in memory, write failed; retrying", "secret", key.String(), "error", err.Error())
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	m.setRecheck(key, p.renewal, now)
	m.failing.mark(key, false)
	m.export(key, leaf)
	reason, verb := status.EventIssued, "issued"
	if p.renewed {
		reason, verb = status.EventRenewed, "renewed"
	}
	m.notify(users, corev1.EventTypeNormal, reason, fmt.Sprintf("certificate for %s %s (serial %s, valid until %s, renewal at %s by %s) in Secret %s",
		strings.Join(p.hosts, ","), verb, ext.Serial, leaf.NotAfter.UTC().Format(time.RFC3339), ext.RenewAt.UTC().Format(time.RFC3339), ext.RenewalSource, key.Name))
	m.announced(key, users, ext.Serial)
	return requeueAt(now, ext.RenewAt, m.recheckAt(key)), nil
}

// takePending returns a certificate issued for key but not yet written.
func (m *Manager) takePending(key types.NamespacedName, hosts []string, directory string) (pendingCert, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pending[key]
	delete(m.pending, key)
	if !ok || !slices.Equal(p.hosts, hosts) || p.directory != directory || !m.opts.Now().Before(p.cert.Leaf.NotAfter) {
		return pendingCert{}, false
	}
	return p, true
}
