package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Result is what Mutate did to a pod.
type Result struct {
	Decision Decision
	// Warnings from Decide and Parse, for admission warnings.
	Warnings []string
	// Mutated is true when the pod was changed.
	Mutated bool
}

// Mutate runs Decide, Parse and Inject on pod in place. It returns an error,
// meant for the user, when the pod asks for injection with invalid annotations;
// the pod is then unchanged and the decision carries the reason.
func Mutate(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (Result, error) {
	d := Decide(pod, ns, cfg)
	r := Result{Decision: d, Warnings: d.Warnings}
	if d.Invalid {
		return r, fmt.Errorf("podtls: %s", InvalidInjectMessage(pod))
	}
	nsName := pod.Namespace
	if ns != nil {
		nsName = ns.Name
	}
	if d.Final() {
		return r, nil
	}
	// A pod that asked for injection hears about bad annotations even when
	// it is skipped for having no listeners.
	spec, warns, err := Parse(pod, nsName, cfg)
	if err != nil {
		r.Decision.Inject = false
		r.Decision.Reasons = append(r.Decision.Reasons, ReasonInvalidAnnotations)
		return r, fmt.Errorf("podtls: %w", err)
	}
	if !d.Inject {
		return r, nil
	}
	r.Warnings = append(r.Warnings, warns...)
	r.Warnings = append(r.Warnings, AppCertWarnings(pod, spec, cfg)...)
	if err := Inject(pod, spec, cfg); err != nil {
		r.Decision.Inject = false
		r.Decision.Reasons = append(r.Decision.Reasons, ReasonInvalidAnnotations)
		return r, fmt.Errorf("podtls: %w", err)
	}
	r.Mutated = true
	return r, nil
}
