package inject

import (
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/contract"
)

// defaultSidecarUser is the sidecar's user and group when the template
// leaves them to the image (the image's USER is 65532:65532).
const defaultSidecarUser = 65532

// checkAppCerts refuses a pod whose app containers already mount something
// at, above or below the certificates' path: the mount would hide it or be
// hidden.
func checkAppCerts(pod *corev1.Pod, spec contract.Spec, mode contract.Placement) error {
	ac := spec.AppCerts
	if ac == nil {
		return nil
	}
	for _, c := range filesContainers(pod, mode) {
		for _, m := range c.VolumeMounts {
			mp := path.Clean(m.MountPath)
			if mp == ac.Path || strings.HasPrefix(ac.Path, strings.TrimSuffix(mp, "/")+"/") || strings.HasPrefix(mp, ac.Path+"/") {
				return fmt.Errorf("annotation %s: %q overlaps the mount of volume %q at %q in container %q; choose a directory of its own",
					contract.AppCerts, ac.Path, m.Name, m.MountPath, c.Name)
			}
		}
	}
	return nil
}

// AppCertWarnings are what injection changes beyond the sidecar for the
// app-owned certificates of pod: its fsGroup, its process namespace and
// the sidecar's user. Call before Inject.
func AppCertWarnings(pod *corev1.Pod, spec contract.Spec, cfg Config) []string {
	ac := spec.AppCerts
	if ac == nil {
		return nil
	}
	var w []string
	if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.FSGroup == nil {
		w = append(w, fmt.Sprintf("podtls: set spec.securityContext.fsGroup to %d (fsGroupChangePolicy OnRootMismatch) so the app containers can read their keys (mode 0640); set fsGroup yourself to choose the group", sidecarGroup(cfg)))
	}
	if ac.Reload.Action == contract.ReloadSignal {
		w = append(w, "podtls: set spec.shareProcessNamespace: true for "+contract.AppCertReload+" signal: the pod's containers see each other's processes")
		uid, known := appUser(pod)
		switch {
		case !known:
			w = append(w, fmt.Sprintf("podtls: %s signal: the app containers do not all set one runAsUser; the sidecar (user %d) can only signal processes of its own user", contract.AppCertReload, sidecarUser(cfg)))
		case uid == 0:
			w = append(w, fmt.Sprintf("podtls: %s signal: the app runs as root, which the sidecar (user %d) cannot signal", contract.AppCertReload, sidecarUser(cfg)))
		case uid != sidecarUser(cfg):
			w = append(w, fmt.Sprintf("podtls: the sidecar runs as user %d, the app's, so that it may signal the app", uid))
		}
	}
	if ac.Reload.Action == contract.ReloadRestart && !hasOwner(pod) {
		w = append(w, fmt.Sprintf("podtls: %s restart: the pod belongs to no Deployment, StatefulSet or DaemonSet to roll; nothing will restart it", contract.AppCertReload))
	}
	return w
}

// injectAppCerts adds the certificates' volume to the sidecar and the app
// containers, the password Secret to the sidecar, and what the reload action
// needs. checkAppCerts has passed.
func injectAppCerts(pod *corev1.Pod, spec contract.Spec, sc *corev1.Container, cfg Config, mode contract.Placement) {
	ac := spec.AppCerts
	if ac == nil {
		return
	}
	sc.VolumeMounts = append(sc.VolumeMounts, corev1.VolumeMount{Name: contract.AppCertsVolume, MountPath: contract.AppCertsDir})
	if ac.PasswordSecret != "" {
		sc.VolumeMounts = append(sc.VolumeMounts, corev1.VolumeMount{Name: contract.AppPasswordVolume, MountPath: contract.AppPasswordDir, ReadOnly: true})
	}
	for _, c := range filesContainers(pod, mode) {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: contract.AppCertsVolume, MountPath: ac.Path, ReadOnly: true})
	}
	if pod.Spec.SecurityContext == nil {
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if pod.Spec.SecurityContext.FSGroup == nil {
		pod.Spec.SecurityContext.FSGroup = ptr.To(sidecarGroup(cfg))
		// The group podtls chose must not make the kubelet walk large
		// volumes on every start: only a root of another group is changed.
		if pod.Spec.SecurityContext.FSGroupChangePolicy == nil {
			pod.Spec.SecurityContext.FSGroupChangePolicy = ptr.To(corev1.FSGroupChangeOnRootMismatch)
		}
	}
	if ac.Reload.Action == contract.ReloadSignal {
		pod.Spec.ShareProcessNamespace = ptr.To(true)
		if uid, known := appUser(pod); known && uid != 0 && uid != sidecarUser(cfg) {
			if sc.SecurityContext == nil {
				sc.SecurityContext = &corev1.SecurityContext{}
			}
			sc.SecurityContext.RunAsUser = ptr.To(uid)
		}
	}
}

// Pod-level fields injectAppCerts may set (Status.Set).
const (
	setFSGroup       = "fsGroup"
	setFSGroupPolicy = "fsGroupChangePolicy"
	setShareProcess  = "shareProcessNamespace"
)

// appCertPodFields lists the pod-level fields injectAppCerts will set.
func appCertPodFields(pod *corev1.Pod, spec contract.Spec) []string {
	ac := spec.AppCerts
	if ac == nil {
		return nil
	}
	var set []string
	if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.FSGroup == nil {
		set = append(set, setFSGroup)
		if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.FSGroupChangePolicy == nil {
			set = append(set, setFSGroupPolicy)
		}
	}
	if ac.Reload.Action == contract.ReloadSignal && (pod.Spec.ShareProcessNamespace == nil || !*pod.Spec.ShareProcessNamespace) {
		set = append(set, setShareProcess)
	}
	return set
}

// uninjectAppCerts takes back what injectAppCerts added to the app
// containers and the pod-level fields it set.
func uninjectAppCerts(pod *corev1.Pod, set []string) {
	for _, c := range filesContainers(pod, contract.SidecarModeNative) {
		c.VolumeMounts = nilIfEmpty(slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == contract.AppCertsVolume }))
	}
	if slices.Contains(set, setShareProcess) {
		pod.Spec.ShareProcessNamespace = nil
	}
	if sc := pod.Spec.SecurityContext; sc != nil && slices.Contains(set, setFSGroup) {
		sc.FSGroup = nil
		if slices.Contains(set, setFSGroupPolicy) {
			sc.FSGroupChangePolicy = nil
		}
		if equality.Semantic.DeepEqual(*sc, corev1.PodSecurityContext{}) {
			pod.Spec.SecurityContext = nil
		}
	}
}

// filesContainers are the containers that get the files: the regular
// containers and, in native placement (the sidecar starts first and writes
// them before the next init container starts), the init containers too.
// Called before the sidecar is added (and after it is removed).
func filesContainers(pod *corev1.Pod, mode contract.Placement) []*corev1.Container {
	var out []*corev1.Container
	if mode != contract.SidecarModeLegacy {
		for i := range pod.Spec.InitContainers {
			out = append(out, &pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// appCertVolumes are the in-memory volume of the files and the password
// Secret (required: a missing Secret keeps the pod from starting, and the
// webhook refuses it when it can see that already).
func appCertVolumes(spec contract.Spec) []corev1.Volume {
	ac := spec.AppCerts
	if ac == nil {
		return nil
	}
	vols := []corev1.Volume{{Name: contract.AppCertsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("4Mi"))}}}}
	if ac.PasswordSecret != "" {
		vols = append(vols, corev1.Volume{Name: contract.AppPasswordVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: ac.PasswordSecret, Items: []corev1.KeyToPath{{Key: ac.PasswordKey, Path: "password"}}}}})
	}
	return vols
}

// appCertArgs render the sidecar's --app-cert-* flags.
func appCertArgs(spec contract.Spec) []string {
	ac := spec.AppCerts
	if ac == nil {
		return nil
	}
	args := []string{"--app-cert-dir", contract.AppCertsDir,
		"--app-cert-sources", strings.Join(ac.Sources, ","),
		"--app-cert-formats", strings.Join(ac.Formats, ",")}
	if ac.PasswordSecret != "" {
		args = append(args, "--app-cert-password-file", contract.AppPasswordFile)
	}
	if ac.PKCS12 == contract.PKCS12Legacy {
		args = append(args, "--app-cert-pkcs12", contract.PKCS12Legacy)
	}
	if a := ac.Reload.Action; a == contract.ReloadSignal || a == contract.ReloadHTTP {
		args = append(args, "--app-cert-reload", ac.Reload.String())
	}
	return args
}

func sidecarUser(cfg Config) int64 {
	if sc := cfg.Template.SecurityContext; sc != nil && sc.RunAsUser != nil {
		return *sc.RunAsUser
	}
	return defaultSidecarUser
}

func sidecarGroup(cfg Config) int64 {
	if sc := cfg.Template.SecurityContext; sc != nil && sc.RunAsGroup != nil {
		return *sc.RunAsGroup
	}
	return defaultSidecarUser
}

// appUser is the one runAsUser every app container runs with (container
// setting, else the pod's); known is false when one leaves it to its image.
func appUser(pod *corev1.Pod) (uid int64, known bool) {
	var podUID *int64
	if pod.Spec.SecurityContext != nil {
		podUID = pod.Spec.SecurityContext.RunAsUser
	}
	for i, c := range pod.Spec.Containers {
		u := podUID
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			u = c.SecurityContext.RunAsUser
		}
		if u == nil || (i > 0 && *u != uid) {
			return 0, false
		}
		uid = *u
	}
	return uid, len(pod.Spec.Containers) > 0
}

// hasOwner reports whether pod belongs to a workload the controller can
// roll: a ReplicaSet (of a Deployment), a StatefulSet or a DaemonSet.
func hasOwner(pod *corev1.Pod) bool {
	for _, o := range pod.OwnerReferences {
		if o.Controller != nil && *o.Controller && (o.Kind == "ReplicaSet" || o.Kind == "StatefulSet" || o.Kind == "DaemonSet") {
			return true
		}
	}
	return false
}
