package inject

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podtls/podtls/contract"
)

// Parse reads the podtls annotations of pod (in namespace ns) into a Spec with
// contract.Parse, checks the sidecar's resources against the controller's
// defaults (EffectiveResources), and adds the warnings only the whole pod shows.
func Parse(pod *corev1.Pod, ns string, cfg Config) (contract.Spec, []string, error) {
	spec, warns, err := contract.Parse(pod.Annotations, ns, cfg.Defaults())
	if err != nil {
		return contract.Spec{}, nil, err
	}
	if spec.Identity, err = identitySource(spec.Identity, cfg); err != nil {
		return contract.Spec{}, nil, err
	}
	_, rw, err := EffectiveResources(spec, cfg.Template.Resources)
	if err != nil {
		return contract.Spec{}, nil, err
	}
	warns = append(warns, rw...)
	return spec, append(warns, podWarnings(pod, spec)...), nil
}

// podWarnings flags valid settings that clash with the pod's containers.
func podWarnings(pod *corev1.Pod, spec contract.Spec) []string {
	var w []string
	// An app port declared as containerPort is usually bound on all interfaces:
	// then plaintext is reachable from the network, next to the TLS port.
	for _, m := range spec.Inbound {
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.ContainerPort == m.Target {
					w = append(w, fmt.Sprintf("annotation %s: container %q declares port %d; bind the app to 127.0.0.1:%d so plaintext is not reachable from the network",
						contract.Inbound, c.Name, m.Target, m.Target))
				}
			}
		}
	}
	// kubelet kills what still runs at the end of the grace period: a drain
	// that cannot finish within it is cut short.
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	if d := spec.Drain(); d >= time.Duration(grace)*time.Second {
		w = append(w, fmt.Sprintf("annotation %s: the drain timeout %s is not below terminationGracePeriodSeconds (%d s); kubelet kills the sidecar before open connections can finish: lower %s or raise terminationGracePeriodSeconds",
			contract.DrainTimeout, d, grace, contract.DrainTimeout))
	}
	return w
}

// identitySource resolves the pod's identity source (annotation, else the
// controller's default): contract.IdentityPodCertificate, or "" for the
// agent. It refuses podCertificate where the cluster has no signer for it.
func identitySource(annotated string, cfg Config) (string, error) {
	src := annotated
	if src == "" {
		src = cfg.IdentitySource
	}
	if src != contract.IdentityPodCertificate {
		return "", nil // the agent; empty keeps the spec (and its hash) as before identity sources
	}
	if !cfg.PodCertificates {
		return "", fmt.Errorf("annotation %s: %q, but this cluster's API server does not serve PodCertificateRequests (Kubernetes >= 1.37) or podtls-controller runs with --pod-certificates off; want %q",
			contract.Identity, src, contract.IdentityAgent)
	}
	return src, nil
}
