package reconciler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
)

// writeTimeout bounds a Secret write after issuance, detached from the
// reconcile's context so a cancelled reconcile cannot lose a new certificate.
const writeTimeout = 30 * time.Second

// acmeAccountDoesNotExist is the RFC 8555 problem type of an unknown account.
const acmeAccountDoesNotExist = "urn:ietf:params:acme:error:accountDoesNotExist"

// ariRecheck is how often an ARI renewal time is asked again when the server
// sends no Retry-After.
const ariRecheck = 6 * time.Hour

// Reconcile brings the Secret req names in line with the pods using it.
func (m *Manager) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.NamespacedName
	log := m.log.WithValues("secret", key.String())
	st := m.config.current()
	if !st.Loaded {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	now := m.opts.Now()

	users, hosts, err := m.users(ctx, key)
	if err != nil {
		return reconcile.Result{}, err
	}
	sec := &corev1.Secret{}
	if err := m.client.Get(ctx, key, sec); apierrors.IsNotFound(err) {
		sec = nil
	} else if err != nil {
		return reconcile.Result{}, fmt.Errorf("get secret %s: %w", key, err)
	} else if !managed(sec) {
		sec = nil // the cache holds managed Secrets only; be safe anyway
	}
	if len(users) == 0 {
		return m.collect(ctx, key, sec, st, now)
	}
	if st.Issuer == nil {
		msg := "no ACME issuer is configured: no certificate will be issued"
		if st.Err != nil {
			msg = fmt.Sprintf("the ACME configuration is not usable (%s): no certificate will be issued until it is fixed", shortError(st.Err))
		}
		for _, p := range users {
			m.notifyOnce(p, corev1.EventTypeWarning, status.EventNotConfigured, msg)
		}
		return reconcile.Result{}, nil
	}
	directory := st.Issuer.Directory()
	pol := policyOf(st.Config)

	var denied []string
	for _, h := range hosts {
		if !st.Config.Allowed(key.Namespace, h) {
			denied = append(denied, h)
		}
	}
	sec, err = m.ensureSecret(ctx, key, sec, hosts, directory, users)
	if sec == nil || err != nil {
		return reconcile.Result{RequeueAfter: m.opts.ResyncInterval}, err
	}
	ext, derr := status.Decode(sec.Annotations)
	if derr != nil {
		log.Info("malformed status annotations; the readable ones are used", "error", derr.Error())
	}
	orig := ext
	ext.UnusedSince = time.Time{}
	ext.Hosts = hosts
	leaf := parseLeaf(sec.Data[corev1.TLSCertKey])
	m.export(key, leaf)

	if len(denied) > 0 {
		msg := fmt.Sprintf("host(s) %s not allowed for namespace %s by the ACME issuer's policy", strings.Join(denied, ","), key.Namespace)
		ext.LastError = msg
		m.failing.mark(key, true)
		for _, p := range users {
			m.notifyOnce(p, corev1.EventTypeWarning, status.EventDenied, msg)
		}
		return reconcile.Result{}, m.writeStatus(ctx, sec, orig, ext)
	}
	m.failing.mark(key, ext.Failing())
	if leaf != nil && now.Before(leaf.NotAfter) && sameNames(leaf, hosts) {
		m.announce(key, users, leaf, ext)
	}

	if p, ok := m.takePending(key, hosts, directory); ok {
		log.Info("writing a certificate issued earlier")
		return m.store(ctx, key, sec, ext, p, users)
	}

	m.limiter.seed(hosts, ext.LastAttempt, now)
	d := decide(now, hosts, leaf, ext, directory, pol)
	if !d.Order {
		next := d.Next
		if d.Need == "" && leaf != nil {
			ext, next = m.refreshRenewal(ctx, key, st.Issuer, leaf, ext, pol, now)
		}
		if err := m.writeStatus(ctx, sec, orig, ext); err != nil {
			return reconcile.Result{}, err
		}
		return requeueAt(now, next, m.recheckAt(key)), nil
	}

	setKey := strings.Join(hosts, ",")
	if !m.inflight.tryLock(setKey) {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	defer m.inflight.unlock(setKey)

	if ext.ForceRenew == "" {
		if src := m.findCopy(ctx, key, hosts, st, pol, now); src != nil {
			return m.copyFrom(ctx, key, sec, ext, src, users, leaf != nil)
		}
	}
	if ok, retry := m.limiter.allow(hosts, now, pol.MaxOrdersPerNamePerHour); !ok {
		log.Info("order cap reached; waiting", "max_per_name_per_hour", pol.MaxOrdersPerNamePerHour, "until", retry)
		if ext.NextAttempt.Before(retry) {
			ext.NextAttempt = retry
		}
		if err := m.writeStatus(ctx, sec, orig, ext); err != nil {
			return reconcile.Result{}, err
		}
		return requeueAt(now, retry), nil
	}
	return m.order(ctx, key, sec, ext, leaf, hosts, users, st, pol, d.Need)
}

// users lists the pods that validly use Secret key, with their host set.
// Pods naming the Secret wrongly get a Warning Event.
func (m *Manager) users(ctx context.Context, key types.NamespacedName) ([]*corev1.Pod, []string, error) {
	pods := &corev1.PodList{}
	if err := m.client.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingFields{secretIndex: key.Name}); err != nil {
		return nil, nil, fmt.Errorf("list pods using %s: %w", key, err)
	}
	var users []*corev1.Pod
	var hosts []string
	for i := range pods.Items {
		p := &pods.Items[i]
		h, ok, why := podHosts(p, key.Name)
		if why != "" {
			m.notifyOnce(p, corev1.EventTypeWarning, status.EventIgnored, why)
			continue
		}
		if !ok {
			continue
		}
		if hosts == nil {
			hosts = h
		} else if !slices.Equal(h, hosts) {
			// Two host sets with one Secret name: a hash collision.
			m.notifyOnce(p, corev1.EventTypeWarning, status.EventIgnored,
				fmt.Sprintf("Secret %s is already used by pods with hosts %s: ignored", key.Name, strings.Join(hosts, ",")))
			continue
		}
		users = append(users, p)
	}
	return users, hosts, nil
}

// ensureSecret returns the managed Secret, creating it (empty certificate)
// when missing. It returns nil without error when a foreign Secret has the name.
func (m *Manager) ensureSecret(ctx context.Context, key types.NamespacedName, sec *corev1.Secret, hosts []string, directory string, users []*corev1.Pod) (*corev1.Secret, error) {
	if sec != nil {
		return sec, nil
	}
	sec = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: SecretSelector(),
			Annotations: status.External{Hosts: hosts, Directory: directory}.Encode(nil)},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: {}, corev1.TLSPrivateKeyKey: {}},
	}
	err := m.client.Create(ctx, sec)
	if err == nil {
		m.log.Info("created external-certificate Secret", "secret", key.String(), "hosts", hosts)
		return sec, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create secret %s: %w", key, err)
	}
	got := &corev1.Secret{}
	if err := m.api.Get(ctx, key, got); err != nil {
		return nil, fmt.Errorf("get secret %s: %w", key, err)
	}
	if managed(got) {
		return got, nil // ours, the cache had not seen it yet
	}
	msg := fmt.Sprintf("Secret %s exists but is not managed by podtls-controller (labels %s=%s, %s=%s missing): left alone, no certificate is issued; delete or rename it",
		key.Name, contract.ManagedByLabel, contract.ManagedByValue, contract.ComponentLabel, status.ComponentExternalCert)
	for _, p := range users {
		m.notifyOnce(p, corev1.EventTypeWarning, status.EventIgnored, msg)
	}
	m.log.Info("foreign Secret in the way; not touching it", "secret", key.String())
	return nil, nil
}

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

// export sets the expiry gauge from the stored leaf.
func (m *Manager) export(key types.NamespacedName, leaf *x509.Certificate) {
	if leaf == nil {
		expiry.DeleteLabelValues(key.Namespace, key.Name)
		return
	}
	expiry.WithLabelValues(key.Namespace, key.Name).Set(float64(leaf.NotAfter.Unix()))
}

// writeStatus updates the Secret when the status changed.
func (m *Manager) writeStatus(ctx context.Context, sec *corev1.Secret, orig, ext status.External) error {
	if fmt.Sprint(orig.Encode(nil)) == fmt.Sprint(ext.Encode(nil)) {
		return nil
	}
	return m.update(ctx, sec, ext)
}

// update writes sec with the status ext, guarded by its resourceVersion.
func (m *Manager) update(ctx context.Context, sec *corev1.Secret, ext status.External) error {
	sec.Annotations = ext.Encode(sec.Annotations)
	if err := m.client.Update(ctx, sec); err != nil {
		return fmt.Errorf("update secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return nil
}

// requeueAt reconciles again at the earliest of the non-zero times (at least
// a second from now).
func requeueAt(now time.Time, times ...time.Time) reconcile.Result {
	var next time.Time
	for _, t := range times {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return reconcile.Result{}
	}
	return reconcile.Result{RequeueAfter: max(next.Sub(now), time.Second)}
}

// parseLeaf returns the first certificate of a PEM chain, or nil.
func parseLeaf(chain []byte) *x509.Certificate {
	block, _ := pem.Decode(chain)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return leaf
}

// validPair reports whether crt and key form a usable pair.
func validPair(crt, key []byte) bool {
	_, err := tls.X509KeyPair(crt, key)
	return err == nil
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// shortError makes err fit a status annotation or an Event: one line, at
// most 512 bytes. Issuer errors name hosts and servers, never credentials.
func shortError(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 512 {
		s = s[:509] + "..."
	}
	return s
}
