package reconciler

import (
	"context"
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
