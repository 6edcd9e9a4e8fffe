package reconciler

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
)

// secretIndex is the field index of pods by the value of their
// external-secret annotation.
const secretIndex = contract.ExternalSecret

// indexPod is the secretIndex function.
func indexPod(o interface{ GetAnnotations() map[string]string }) []string {
	if name := o.GetAnnotations()[contract.ExternalSecret]; name != "" {
		return []string{name}
	}
	return nil
}

// podHosts returns the external hosts a pod asks for, if the pod may make the
// manager act on Secret name: it was injected by the webhook (the status
// annotation), it is still running or about to, and the Secret name the
// webhook wrote matches the one recomputed from the hosts. The last check
// is what keeps a pod (whose annotations anyone with pod access can edit)
// from pointing the manager at a Secret of another host set. It returns
// ok=false and no reason for pods that simply do not count (finished,
// terminating, not injected), and a reason for pods that are wrong.
func podHosts(pod *corev1.Pod, name string) (hosts []string, ok bool, reason string) {
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, false, ""
	}
	if pod.Annotations[contract.Status] == "" || pod.Annotations[contract.ExternalSecret] != name {
		return nil, false, ""
	}
	v, present := pod.Annotations[contract.ExternalHosts]
	if !present {
		return nil, false, fmt.Sprintf("annotation %s=%s but no %s: ignored", contract.ExternalSecret, name, contract.ExternalHosts)
	}
	// Parse only the hosts annotation, with the contract's parser (the
	// webhook's), so the rules (wildcards, normalisation, sorting) cannot
	// drift apart.
	spec, _, err := contract.Parse(map[string]string{contract.ExternalHosts: v}, pod.Namespace, contract.Defaults{})
	if err != nil {
		return nil, false, fmt.Sprintf("%v: ignored", err)
	}
	if len(spec.ExternalHosts) == 0 {
		return nil, false, fmt.Sprintf("annotation %s is empty: ignored", contract.ExternalHosts)
	}
	if want := contract.ExternalSecretName(spec.ExternalHosts); want != name {
		return nil, false, fmt.Sprintf("annotation %s=%s does not match %s (want %s, was %s edited after admission?): ignored",
			contract.ExternalSecret, name, contract.ExternalHosts, want, contract.ExternalHosts)
	}
	return spec.ExternalHosts, true, ""
}

// announce gives each user of key that was not told about leaf yet one
// Normal Event naming the certificate it uses: a pod that joins a Secret
// after issuance (a new replica) learns what it serves, as the pods present
// at issuance did from the issued/renewed Event. Pods are remembered per
// Secret and serial, so resyncs record nothing. On the first look at key
// since this process started, pods created before the certificate was
// stored (last-success) are taken to have been told by the previous leader,
// and at most maxEventPods of the others (the newest) are told, which bounds
// the Events after a controller restart.
func (m *Manager) announce(key types.NamespacedName, users []*corev1.Pod, leaf *x509.Certificate, ext status.External) {
	serial := serialHex(leaf)
	m.mu.Lock()
	told, known := m.told[key]
	current := make(map[types.UID]string, len(users))
	var fresh []*corev1.Pod
	for _, p := range users {
		current[p.UID] = serial
		switch {
		case told[p.UID] == serial:
		case !known && !ext.LastSuccess.IsZero() && !p.CreationTimestamp.IsZero() && p.CreationTimestamp.Time.Before(ext.LastSuccess):
		default:
			fresh = append(fresh, p)
		}
	}
	m.told[key] = current // also forgets pods that left
	m.mu.Unlock()
	if !known && len(fresh) > maxEventPods {
		slices.SortFunc(fresh, func(a, b *corev1.Pod) int { return b.CreationTimestamp.Time.Compare(a.CreationTimestamp.Time) })
		m.log.Info("first look since start: telling only the newest pods which certificate they use",
			"secret", key.String(), "pods", len(fresh), "told", maxEventPods)
		fresh = fresh[:maxEventPods]
	}
	if len(fresh) == 0 {
		return
	}
	msg := fmt.Sprintf("uses certificate serial %s of Secret %s for %s, valid until %s", serial, key.Name,
		strings.Join(ext.Hosts, ","), leaf.NotAfter.UTC().Format(time.RFC3339))
	for _, p := range fresh {
		m.recorder.Event(p, corev1.EventTypeNormal, status.EventIssued, msg)
	}
}

// announced records that users were told about serial (by an issued or
// renewed Event), so announce does not repeat it.
func (m *Manager) announced(key types.NamespacedName, users []*corev1.Pod, serial string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	told := m.told[key]
	if told == nil {
		told = make(map[types.UID]string, len(users))
		m.told[key] = told
	}
	for _, p := range users {
		told[p.UID] = serial
	}
}
