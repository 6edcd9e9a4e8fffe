// Package inject decides whether a pod gets the podtls sidecar and renders it. It
// is pure: no I/O, no clocks, no API calls. The admission handler (package webhook)
// and the CLI both call Decide, Parse and Inject in that order.
package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/identity"
)

// Config is everything Inject needs besides the pod. It holds no secrets.
type Config struct {
	// Version of the controller, recorded in the status annotation.
	Version string
	// ControllerNamespace is never injected.
	ControllerNamespace string
	// TrustDomain of the SPIFFE IDs.
	TrustDomain string
	// ClusterDomain is the DNS suffix after NS.svc.
	ClusterDomain string
	// CAURL is the sign API base URL the agent calls.
	CAURL string
	// TrustRootsPEM is the current roots bundle, injected as env PODTLS_TRUST_ROOTS.
	TrustRootsPEM string
	// SidecarMode is the default mode; a pod annotation may override it.
	SidecarMode contract.Placement
	// IdentitySource is where pods without a podtls.io/identity annotation
	// get their certificate: contract.IdentityAgent ("" too) or
	// contract.IdentityPodCertificate.
	IdentitySource string
	// PodCertificates: the API server serves PodCertificateRequests and the
	// controller signs them, so podCertificate pods can be admitted.
	PodCertificates bool
	// Template is the sidecar container as data: image, pull policy, resources and
	// security context. Inject fills in name, args, env, ports, probes and mounts.
	Template corev1.Container
	// LegacyWaitCommand is the postStart exec hook of the legacy mode: it must
	// block until the sidecar's /readyz answers 200 (kubelet starts the next
	// container only after the hook returns).
	LegacyWaitCommand []string
	// LegacyDrainCommand is the preStop exec hook of the legacy mode, without
	// its timeout (Inject appends "--timeout" and the pod's drain timeout): it
	// must block until the sidecar has no open connection, so the sidecar
	// outlives the app's last call instead of stopping with it.
	LegacyDrainCommand []string
}

// Defaults are the parts of the config contract.Parse needs.
func (c Config) Defaults() contract.Defaults {
	return contract.Defaults{TrustDomain: c.TrustDomain, ClusterDomain: c.ClusterDomain, SidecarMode: c.SidecarMode}
}

// DefaultConfig returns the defaults the controller's flags start from.
func DefaultConfig() Config {
	return Config{
		Version:             "dev",
		ControllerNamespace: "podtls-system",
		TrustDomain:         identity.DefaultTrustDomain,
		ClusterDomain:       identity.DefaultClusterDomain,
		CAURL:               "https://podtls-controller.podtls-system.svc:8443",
		SidecarMode:         contract.SidecarModeNative,
		Template:            DefaultTemplate("ghcr.io/podtls/podtls-sidecar:dev"),
		LegacyWaitCommand: []string{"/podtls-sidecar", "wait-ready",
			"--admin", fmt.Sprintf("127.0.0.1:%d", contract.AdminPort), "--timeout", "120s"},
		LegacyDrainCommand: []string{"/podtls-sidecar", "wait-idle",
			"--admin", fmt.Sprintf("127.0.0.1:%d", contract.AdminPort)},
	}
}

// DefaultTemplate is the sidecar container template: small requests, a memory
// limit (128Mi: 568 connections under load by the memory model, see
// contract.MaxConnectionsFor), no CPU limit, and the hardened security
// context every podtls sidecar runs with.
func DefaultTemplate(image string) corev1.Container {
	return corev1.Container{
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](65532),
			RunAsGroup:               ptr.To[int64](65532),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// Validate checks the configuration once at start-up.
func (c Config) Validate() error {
	if err := identity.ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("inject config: %w", err)
	}
	if c.Template.Image == "" {
		return fmt.Errorf("inject config: sidecar image is empty")
	}
	if c.CAURL == "" {
		return fmt.Errorf("inject config: CA URL is empty")
	}
	switch c.SidecarMode {
	case contract.SidecarModeNative, contract.SidecarModeLegacy:
	default:
		return fmt.Errorf("inject config: sidecar mode %q: want native or legacy", c.SidecarMode)
	}
	switch c.IdentitySource {
	case "", contract.IdentityAgent:
	case contract.IdentityPodCertificate:
		if !c.PodCertificates {
			return fmt.Errorf("inject config: identity source %s needs the PodCertificateRequest API (Kubernetes >= 1.37) and the controller's signer", c.IdentitySource)
		}
	default:
		return fmt.Errorf("inject config: identity source %q: want agent or podCertificate", c.IdentitySource)
	}
	if _, _, err := EffectiveResources(contract.Spec{}, c.Template.Resources); err != nil {
		return fmt.Errorf("inject config: sidecar resources: %w", err)
	}
	if c.SidecarMode == contract.SidecarModeLegacy && len(c.LegacyWaitCommand) == 0 {
		return fmt.Errorf("inject config: legacy mode needs a wait command")
	}
	if c.SidecarMode == contract.SidecarModeLegacy && len(c.LegacyDrainCommand) == 0 {
		return fmt.Errorf("inject config: legacy mode needs a drain command")
	}
	return nil
}

// tokenAudience is the audience of the projected token, checked by the CA.
const tokenAudience = signapi.Audience
