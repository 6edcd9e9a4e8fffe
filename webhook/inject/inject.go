package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/contract"
)

// Status is the JSON value of the podtls.io/status annotation.
type Status struct {
	Version string             `json:"version"`
	Mode    contract.Placement `json:"mode"`
	// Hash covers the spec and the configuration that shaped the sidecar, so a
	// status command can tell pods injected from an older configuration.
	Hash string `json:"hash"`
	// Set lists the pod-level fields injection set for app-owned
	// certificates ("fsGroup", "shareProcessNamespace"), so Uninject can
	// take them back.
	Set []string `json:"set,omitempty"`
}

// Inject adds the sidecar described by spec to pod, in place. The caller has
// called Decide (Inject true) and Parse. It fails without touching the pod when
// the pod already uses one of podtls's volume names.
func Inject(pod *corev1.Pod, spec contract.Spec, cfg Config) error {
	mode := spec.SidecarMode
	if mode == "" {
		mode = cfg.SidecarMode
	}
	vols := volumes(spec)
	for _, v := range vols {
		if slices.ContainsFunc(pod.Spec.Volumes, func(o corev1.Volume) bool { return o.Name == v.Name }) {
			return fmt.Errorf("pod already has a volume named %q, which podtls reserves", v.Name)
		}
	}
	if err := checkAppCerts(pod, spec, mode); err != nil {
		return err
	}
	hash, err := specHash(spec, cfg, mode)
	if err != nil {
		return err
	}
	status, err := json.Marshal(Status{Version: cfg.Version, Mode: mode, Hash: hash, Set: appCertPodFields(pod, spec)})
	if err != nil {
		return fmt.Errorf("encode %s: %w", contract.Status, err)
	}

	c, err := sidecar(spec, cfg)
	if err != nil {
		return err
	}
	var probes contract.AppProbesConfig
	var orig originalProbes
	if !spec.KeepProbes {
		probes, orig = rewriteProbes(pod, spec)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if len(probes) > 0 {
		run, err := json.Marshal(probes)
		if err != nil {
			return fmt.Errorf("encode %s: %w", contract.EnvAppProbes, err)
		}
		saved, err := json.Marshal(orig)
		if err != nil {
			return fmt.Errorf("encode %s: %w", contract.AppProbes, err)
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: contract.EnvAppProbes, Value: string(run)})
		pod.Annotations[contract.AppProbes] = string(saved)
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, vols...)
	injectAppCerts(pod, spec, &c, cfg, mode)
	switch mode {
	case contract.SidecarModeLegacy:
		// kubelet starts regular containers in order and runs each postStart hook
		// before starting the next container: the hook blocks until /readyz.
		// All containers stop together in this placement: the preStop hook
		// keeps the sidecar serving until the app's connections have ended
		// (or the drain timeout), then SIGTERM starts the sidecar's own drain.
		c.Lifecycle = &corev1.Lifecycle{
			PostStart: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: slices.Clone(cfg.LegacyWaitCommand)},
			},
		}
		if len(cfg.LegacyDrainCommand) > 0 {
			c.Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
				Command: append(slices.Clone(cfg.LegacyDrainCommand), "--timeout", spec.Drain().String())}}
		}
		if _, set := pod.Annotations[contract.DefaultContainer]; !set && len(pod.Spec.Containers) > 0 {
			pod.Annotations[contract.DefaultContainer] = pod.Spec.Containers[0].Name
		}
		pod.Spec.Containers = append([]corev1.Container{c}, pod.Spec.Containers...)
	default:
		// A native sidecar: an init container that keeps running. Placed first,
		// so later init containers and the app start after its startupProbe passes.
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		pod.Spec.InitContainers = append([]corev1.Container{c}, pod.Spec.InitContainers...)
	}
	pod.Annotations[contract.Status] = string(status)
	if spec.ExternalSecret != "" {
		pod.Annotations[contract.ExternalSecret] = spec.ExternalSecret
	}
	return nil
}

// sidecar renders the container from the template in cfg.
func sidecar(spec contract.Spec, cfg Config) (corev1.Container, error) {
	res, _, err := EffectiveResources(spec, cfg.Template.Resources)
	if err != nil {
		return corev1.Container{}, err
	}
	c := *cfg.Template.DeepCopy()
	c.Name = contract.ContainerName
	c.Resources = res.Requirements
	c.Args = args(spec, cfg, res.MaxConnections)
	if res.GoMemLimit > 0 {
		c.Env = append(c.Env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: strconv.FormatInt(res.GoMemLimit, 10)})
	}
	c.Env = append(c.Env,
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
		fieldEnv(contract.EnvPodIP, "status.podIP"),
		fieldEnv(contract.EnvPodIPs, "status.podIPs"),
	)
	if cfg.TrustRootsPEM != "" && spec.Identity != contract.IdentityPodCertificate {
		// The agent's way to trust the CA before the ConfigMap arrives; the
		// kubelet delivers the roots with the certificate.
		c.Env = append(c.Env, corev1.EnvVar{Name: contract.EnvTrustRoots, Value: cfg.TrustRootsPEM})
	}
	c.Ports = append(c.Ports, corev1.ContainerPort{Name: "podtls-admin", ContainerPort: contract.AdminPort, Protocol: corev1.ProtocolTCP})
	for _, m := range spec.Inbound {
		c.Ports = append(c.Ports, corev1.ContainerPort{
			Name: "tls-" + strconv.Itoa(int(m.Listen)), ContainerPort: m.Listen, Protocol: corev1.ProtocolTCP})
	}
	if r := spec.Redirect; r != nil {
		c.Ports = append(c.Ports, corev1.ContainerPort{
			Name: "http-redirect", ContainerPort: r.Listen, Protocol: corev1.ProtocolTCP})
	}
	if spec.Identity == contract.IdentityPodCertificate {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: contract.CertsVolume, MountPath: contract.CertsDir, ReadOnly: true})
	} else {
		c.VolumeMounts = append(c.VolumeMounts,
			corev1.VolumeMount{Name: contract.CertsVolume, MountPath: contract.CertsDir},
			corev1.VolumeMount{Name: contract.TrustVolume, MountPath: contract.TrustDir, ReadOnly: true},
			corev1.VolumeMount{Name: contract.TokenVolume, MountPath: contract.TokenDir, ReadOnly: true},
		)
	}
	if spec.ExternalSecret != "" {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{
			Name: spec.ExternalSecret, MountPath: path.Join(contract.ExternalDir, spec.ExternalSecret), ReadOnly: true})
	}
	c.StartupProbe = probe("/readyz", 1, 120)
	c.ReadinessProbe = probe("/readyz", 5, 3)
	c.LivenessProbe = probe("/healthz", 10, 3)
	return c, nil
}

// Args renders the podtls-sidecar command line for spec. The order is fixed so
// the output is stable for golden files and hashes. Resources Parse refused
// render no --max-connections.
func Args(spec contract.Spec, cfg Config) []string {
	res, _, _ := EffectiveResources(spec, cfg.Template.Resources)
	return args(spec, cfg, res.MaxConnections)
}

func args(spec contract.Spec, cfg Config, maxConns int) []string {
	args := []string{"--admin", ":" + strconv.Itoa(contract.AdminPort)}
	if spec.Identity == contract.IdentityPodCertificate {
		// The kubelet writes key, chain and roots; the names come from the
		// signer (Services, podtls.io/dns-names) and the lifetime from the
		// projection, so no --dns-name or --cert-ttl.
		args = append(args,
			"--credential-bundle", path.Join(contract.CertsDir, contract.CredentialBundleFile),
			"--trust-bundle", path.Join(contract.CertsDir, contract.TrustBundleKey),
			"--discovery-url", cfg.CAURL,
			"--trust-domain", cfg.TrustDomain,
			"--mode", spec.Mode,
		)
	} else {
		args = append(args,
			"--cert-dir", contract.CertsDir,
			"--trust-bundle", contract.TrustFile,
			"--ca-url", cfg.CAURL,
			"--token-file", contract.TokenFile,
			"--trust-domain", cfg.TrustDomain,
			"--mode", spec.Mode,
		)
		if spec.CertTTL > 0 {
			args = append(args, "--cert-ttl", spec.CertTTL.String())
		}
	}
	if spec.IdleTimeout > 0 {
		args = append(args, "--idle-timeout", spec.IdleTimeout.String())
	}
	if spec.DrainTimeout > 0 {
		args = append(args, "--drain-timeout", spec.DrainTimeout.String())
	}
	if maxConns > 0 {
		args = append(args, "--max-connections", strconv.Itoa(maxConns))
	}
	if spec.Identity != contract.IdentityPodCertificate {
		for _, n := range spec.DNSNames {
			args = append(args, "--dns-name", n)
		}
	}
	for _, m := range spec.Inbound {
		// ":LISTEN" takes every pod address, IPv4 and IPv6; "localhost" reaches
		// an app on 127.0.0.1 or ::1.
		in := fmt.Sprintf(":%d=localhost:%d", m.Listen, m.Target)
		if m.Protocol != "" {
			in += "/" + m.Protocol
		}
		args = append(args, "--inbound", in)
	}
	for _, u := range spec.Upstreams {
		scheme := ""
		if u.Public {
			scheme = contract.PublicScheme
		}
		// "localhost": 127.0.0.1 and, when the pod has it, ::1.
		target := fmt.Sprintf("localhost:%d=%s%s:%d", u.LocalPort, scheme, u.Host, u.Port)
		if u.Protocol != "" {
			target += "/" + u.Protocol
		}
		target += u.Policy()
		if u.ID != "" {
			target += "#" + u.ID
		}
		args = append(args, "--outbound", target)
	}
	if spec.ExternalSecret != "" {
		args = append(args, "--external-cert-dir", path.Join(contract.ExternalDir, spec.ExternalSecret))
	}
	args = append(args, appCertArgs(spec)...)
	for _, p := range spec.Allow {
		args = append(args, "--allow", p)
	}
	if spec.AccessLog {
		args = append(args, "--access-log")
	}
	return append(args, edgeArgs(spec)...)
}

// edgeArgs renders the redirect listener, the trusted proxies and the
// PROXY-protocol ports.
func edgeArgs(spec contract.Spec) []string {
	var args []string
	if r := spec.Redirect; r != nil {
		args = append(args, "--redirect", fmt.Sprintf(":%d=%d", r.Listen, r.HTTPSPort))
		for _, h := range spec.ExternalHosts {
			args = append(args, "--redirect-host", h)
		}
	}
	for _, c := range spec.TrustedProxies {
		args = append(args, "--trusted-proxy", c)
	}
	for _, p := range spec.ProxyProtocol {
		args = append(args, "--proxy-protocol", strconv.Itoa(int(p)))
	}
	return args
}

func volumes(spec contract.Spec) []corev1.Volume {
	vols := identityVolumes(spec)
	if spec.ExternalSecret != "" {
		vols = append(vols, corev1.Volume{Name: spec.ExternalSecret, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: spec.ExternalSecret, Optional: ptr.To(true)}}})
	}
	return append(vols, appCertVolumes(spec)...)
}

// identityVolumes are the volumes of the pod's identity: for the agent an
// in-memory cert dir, the trust-bundle ConfigMap and the projected token; for
// podCertificate one projected volume in which the kubelet writes the
// credential bundle (key and chain) and the roots of podtls's
// ClusterTrustBundles.
func identityVolumes(spec contract.Spec) []corev1.Volume {
	if spec.Identity == contract.IdentityPodCertificate {
		var maxExp *int32
		if spec.CertTTL > 0 {
			maxExp = ptr.To(int32(spec.CertTTL / time.Second))
		}
		// No defaultMode: the kubelet writes projected files as root and
		// chowns them only when every container runs as one user, so a
		// 0400 key would be unreadable to the non-root sidecar. The volume
		// is mounted into the sidecar alone.
		return []corev1.Volume{{Name: contract.CertsVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{
				{PodCertificate: &corev1.PodCertificateProjection{
					SignerName: contract.SignerName, KeyType: "ECDSAP256", MaxExpirationSeconds: maxExp,
					CredentialBundlePath: contract.CredentialBundleFile}},
				{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{
					SignerName: ptr.To(contract.SignerName),
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
						contract.TrustBundleLabel: contract.TrustBundleLabelValue}},
					Path: contract.TrustBundleKey}},
			}}}}}
	}
	return []corev1.Volume{
		{Name: contract.CertsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
		{Name: contract.TrustVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: contract.TrustBundleConfigMap},
			Items:                []corev1.KeyToPath{{Key: contract.TrustBundleKey, Path: "ca.crt"}},
			Optional:             ptr.To(true)}}},
		{Name: contract.TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: tokenAudience, ExpirationSeconds: ptr.To[int64](contract.TokenExpirationSeconds), Path: "token"}}}}}},
	}
}

func probe(p string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: p, Port: intstr.FromInt32(contract.AdminPort), Scheme: corev1.URISchemeHTTP}},
		PeriodSeconds:    period,
		FailureThreshold: failures,
		TimeoutSeconds:   1,
		SuccessThreshold: 1,
	}
}

func fieldEnv(name, field string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: field}}}
}

// specHash is the first 16 hex digits of SHA-256 over the spec and the parts of
// the configuration that shape the container. The trust roots are left out: they
// rotate without the sidecar needing a change.
func specHash(spec contract.Spec, cfg Config, mode contract.Placement) (string, error) {
	var drain []string // the legacy preStop hook; omitted in native mode so those hashes stay as they were
	if mode == contract.SidecarModeLegacy {
		drain = cfg.LegacyDrainCommand
	}
	b, err := json.Marshal(struct {
		Spec        contract.Spec
		Mode        contract.Placement
		Template    corev1.Container
		CAURL       string
		TrustDomain string
		Wait        []string
		Drain       []string `json:",omitempty"`
	}{spec, mode, cfg.Template, cfg.CAURL, cfg.TrustDomain, cfg.LegacyWaitCommand, drain})
	if err != nil {
		return "", fmt.Errorf("hash spec: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}
