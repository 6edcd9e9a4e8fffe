package inject

import (
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/podtls/podtls/contract"
)

// ReasonCode is a stable, machine-readable reason for a decision. The same codes
// go to logs, the admissions metric's "reason" label and pod Events: never rename one.
type ReasonCode string

// Reasons for injecting.
const (
	ReasonNamespaceEnabled ReasonCode = "namespace-enabled" // namespace label podtls.io/inject=enabled
	ReasonPodEnabled       ReasonCode = "pod-enabled"       // pod annotation podtls.io/inject=true
)

// Reasons for not injecting.
const (
	ReasonNotEnabled          ReasonCode = "not-enabled"             // neither label nor annotation asks for it
	ReasonPodDisabled         ReasonCode = "pod-disabled"            // pod annotation podtls.io/inject=false
	ReasonNamespaceDisabled   ReasonCode = "namespace-disabled"      // namespace label podtls.io/inject=disabled
	ReasonSystemNamespace     ReasonCode = "system-namespace"        // kube-system, kube-public, kube-node-lease
	ReasonControllerNamespace ReasonCode = "controller-namespace"    // the controller's own namespace
	ReasonHostNetwork         ReasonCode = "host-network"            // the sidecar's ports would collide on the node
	ReasonNoListeners         ReasonCode = "no-listeners"            // neither inbound nor upstreams: the sidecar would have nothing to do
	ReasonMirrorPod           ReasonCode = "mirror-pod"              // a static pod's mirror: kubelet runs the manifest, not this object
	ReasonWindowsPod          ReasonCode = "windows-pod"             // the sidecar image is Linux-only
	ReasonAlreadyInjected     ReasonCode = "already-injected"        // re-invocation: nothing to do
	ReasonInvalidInject       ReasonCode = "invalid-inject-value"    // podtls.io/inject is neither true nor false
	ReasonInvalidAnnotations  ReasonCode = "invalid-annotations"     // set by the handler when Parse fails
	ReasonInvalidNamespaceVal ReasonCode = "invalid-namespace-label" // namespace label is neither enabled nor disabled
)

// Decision is the outcome of Decide.
type Decision struct {
	Inject  bool
	Reasons []ReasonCode
	// Warnings are shown to the user (admission warnings) but do not block.
	Warnings []string
	// Invalid is true when the pod must be denied (an unknown podtls.io/inject value).
	Invalid bool
}

// Final reports whether the decision needs nothing more: the pod is neither
// injected nor refused, and Mutate would return it unchanged without parsing.
func (d Decision) Final() bool {
	return !d.Inject && !d.Invalid && !d.Has(ReasonNoListeners)
}

// Has reports whether the decision carries the reason.
func (d Decision) Has(r ReasonCode) bool { return slices.Contains(d.Reasons, r) }

// Decide says whether pod, created in namespace ns, gets the sidecar. ns may be nil
// when the namespace is unknown; its labels then count as absent. The namespace
// name comes from ns if set, else from the pod.
func Decide(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) Decision {
	nsName := pod.Namespace
	var nsLabels map[string]string
	if ns != nil {
		nsName = ns.Name
		nsLabels = ns.Labels
	}
	if slices.Contains(contract.SystemNamespaces, nsName) {
		return Decision{Reasons: []ReasonCode{ReasonSystemNamespace}}
	}
	if nsName != "" && nsName == cfg.ControllerNamespace {
		return Decision{Reasons: []ReasonCode{ReasonControllerNamespace}}
	}
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		// Changing a mirror pod changes nothing on the node, and mirror pods may
		// not use service-account token volumes.
		return Decision{Reasons: []ReasonCode{ReasonMirrorPod}}
	}
	if HasSidecar(pod) {
		return Decision{Reasons: []ReasonCode{ReasonAlreadyInjected}}
	}

	var d Decision
	switch v, set := pod.Annotations[contract.Inject]; {
	case !set:
		switch nv := nsLabels[contract.Inject]; nv {
		case contract.NamespaceEnabled:
			d = Decision{Inject: true, Reasons: []ReasonCode{ReasonNamespaceEnabled}}
		case contract.NamespaceDisabled:
			d = Decision{Reasons: []ReasonCode{ReasonNamespaceDisabled}}
		case "":
			d = Decision{Reasons: []ReasonCode{ReasonNotEnabled}}
		default:
			// A typo on the namespace must not break every pod in it: skip and warn.
			d = Decision{Reasons: []ReasonCode{ReasonInvalidNamespaceVal},
				Warnings: []string{"namespace label " + contract.Inject + "=" + nv +
					" is neither \"enabled\" nor \"disabled\": pod not injected"}}
		}
	case v == contract.PodEnabled:
		d = Decision{Inject: true, Reasons: []ReasonCode{ReasonPodEnabled}}
	case v == contract.PodDisabled:
		d = Decision{Reasons: []ReasonCode{ReasonPodDisabled}}
	default:
		return Decision{Invalid: true, Reasons: []ReasonCode{ReasonInvalidInject}}
	}

	if d.Inject && isWindows(pod) {
		return Decision{Reasons: []ReasonCode{ReasonWindowsPod},
			Warnings: []string{"podtls: Windows pod not injected: the sidecar runs on Linux nodes only"}}
	}
	if d.Inject && pod.Spec.HostNetwork {
		return Decision{Reasons: []ReasonCode{ReasonHostNetwork},
			Warnings: []string{"podtls: pod uses hostNetwork; the sidecar is not injected " +
				"(its ports would bind on the node). Set " + contract.Inject + ": \"false\" to silence this warning"}}
	}
	// Without a listener the sidecar's certificate is only usable as files
	// for the app (podtls.io/app-certs); podtls-sidecar refuses to start
	// with neither.
	_, files := pod.Annotations[contract.AppCerts]
	if d.Inject && !files && len(contract.SplitList(pod.Annotations[contract.Inbound])) == 0 && len(contract.SplitList(pod.Annotations[contract.Upstreams])) == 0 {
		return Decision{Reasons: []ReasonCode{ReasonNoListeners},
			Warnings: []string{fmt.Sprintf("podtls: pod not injected: set %s and/or %s to say which traffic the sidecar handles, or %s for certificate files",
				contract.Inbound, contract.Upstreams, contract.AppCerts)}}
	}
	return d
}

// InvalidInjectMessage is the denial message for an unknown podtls.io/inject value.
func InvalidInjectMessage(pod *corev1.Pod) string {
	return "annotation " + contract.Inject + ": got " + strconv.Quote(pod.Annotations[contract.Inject]) +
		`, want "true" or "false"`
}

// HasSidecar reports whether the pod already has the podtls sidecar, as a native
// sidecar or as a legacy container.
func HasSidecar(pod *corev1.Pod) bool {
	isOurs := func(c corev1.Container) bool { return c.Name == contract.ContainerName }
	return slices.ContainsFunc(pod.Spec.InitContainers, isOurs) || slices.ContainsFunc(pod.Spec.Containers, isOurs)
}

// isWindows reports whether the pod declares Windows as its OS or targets Windows nodes.
func isWindows(pod *corev1.Pod) bool {
	return (pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows) ||
		pod.Spec.NodeSelector[corev1.LabelOSStable] == string(corev1.Windows)
}
