package inject

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/podtls/podtls/contract"
)

// Uninject returns a copy of pod without what Inject added: the sidecar
// container (native or legacy), podtls's volumes, the status, external-secret and
// app-probes annotations, the app-owned certificates' mounts and the pod fields
// set for them, and it points rewritten probes back at the app. It reverses Mutate exactly, so that
// Uninject(Mutate(p)) equals p, with one ambiguity: in legacy mode Inject sets
// kubectl.kubernetes.io/default-container to the first app container when the
// user had not set it, and Uninject removes it when it still names that
// container. A pod without the sidecar is returned unchanged.
func Uninject(pod *corev1.Pod) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	if !HasSidecar(pod) {
		return out, nil
	}
	var st Status
	if raw, ok := pod.Annotations[contract.Status]; ok {
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", contract.Status, err)
		}
	}
	isOurs := func(c corev1.Container) bool { return c.Name == contract.ContainerName }
	legacy := slices.ContainsFunc(out.Spec.Containers, isOurs)
	out.Spec.InitContainers = nilIfEmpty(slices.DeleteFunc(out.Spec.InitContainers, isOurs))
	out.Spec.Containers = slices.DeleteFunc(out.Spec.Containers, isOurs)

	reserved := []string{contract.CertsVolume, contract.TrustVolume, contract.TokenVolume, contract.AppCertsVolume, contract.AppPasswordVolume}
	if s := pod.Annotations[contract.ExternalSecret]; s != "" {
		reserved = append(reserved, s)
	}
	out.Spec.Volumes = nilIfEmpty(slices.DeleteFunc(out.Spec.Volumes, func(v corev1.Volume) bool {
		return slices.Contains(reserved, v.Name)
	}))

	uninjectAppCerts(out, st.Set)
	if saved, ok := pod.Annotations[contract.AppProbes]; ok {
		if err := restoreProbes(out, saved); err != nil {
			return nil, err
		}
	}
	delete(out.Annotations, contract.Status)
	delete(out.Annotations, contract.ExternalSecret)
	delete(out.Annotations, contract.AppProbes)
	if legacy || st.Mode == contract.SidecarModeLegacy {
		if len(out.Spec.Containers) > 0 && out.Annotations[contract.DefaultContainer] == out.Spec.Containers[0].Name {
			delete(out.Annotations, contract.DefaultContainer)
		}
	}
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	return out, nil
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
