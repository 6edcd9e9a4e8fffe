package manager

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/webhook/annotations"
	"github.com/podtls/podtls/webhook/inject"
)

// secretIndex is the field index of pods by the value of their
// podtls.io/external-secret annotation.
const secretIndex = "podtls.io/external-secret"

// indexPod is the secretIndex function.
func indexPod(o interface{ GetAnnotations() map[string]string }) []string {
	if name := o.GetAnnotations()[annotations.ExternalSecret]; name != "" {
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
	if pod.Annotations[annotations.Status] == "" || pod.Annotations[annotations.ExternalSecret] != name {
		return nil, false, ""
	}
	v, present := pod.Annotations[annotations.ExternalHosts]
	if !present {
		return nil, false, fmt.Sprintf("annotation %s=%s but no %s: ignored", annotations.ExternalSecret, name, annotations.ExternalHosts)
	}
	// Parse only the hosts annotation, with the webhook's own parser, so the
	// rules (wildcards, normalisation, sorting) cannot drift apart.
	only := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annotations.ExternalHosts: v}}}
	spec, _, err := inject.Parse(only, pod.Namespace, inject.DefaultConfig())
	if err != nil {
		return nil, false, fmt.Sprintf("%v: ignored", err)
	}
	if len(spec.ExternalHosts) == 0 {
		return nil, false, fmt.Sprintf("annotation %s is empty: ignored", annotations.ExternalHosts)
	}
	if want := inject.ExternalSecretName(spec.ExternalHosts); want != name {
		return nil, false, fmt.Sprintf("annotation %s=%s does not match %s (want %s, was %s edited after admission?): ignored",
			annotations.ExternalSecret, name, annotations.ExternalHosts, want, annotations.ExternalHosts)
	}
	return spec.ExternalHosts, true, ""
}
