package options

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/version"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

// InjectConfig is the injection configuration the controller's options give,
// with the sidecar mode already resolved and the CA roots the webhook puts in
// PODTLS_TRUST_ROOTS. The podtls CLI builds its offline `inject` from this very
// function, so the CLI and the webhook cannot drift apart.
func InjectConfig(opts Options, mode contract.Placement, version, rootsPEM string) (inject.Config, error) {
	if opts.CAURL == "" {
		opts.CAURL = fmt.Sprintf("https://%s.%s.svc:8443", opts.ServiceName, opts.Namespace)
	}
	cfg := inject.DefaultConfig()
	cfg.Version = version
	cfg.ControllerNamespace = opts.Namespace
	cfg.TrustDomain = opts.TrustDomain
	cfg.ClusterDomain = opts.ClusterDomain
	cfg.CAURL = opts.CAURL
	cfg.TrustRootsPEM = rootsPEM
	cfg.SidecarMode = mode
	cfg.Template = inject.DefaultTemplate(opts.SidecarImage)
	if opts.SidecarPullPolicy != "" {
		cfg.Template.ImagePullPolicy = corev1.PullPolicy(opts.SidecarPullPolicy)
	}
	for _, q := range []struct {
		list  corev1.ResourceList
		name  corev1.ResourceName
		value string
		flag  string
	}{
		{cfg.Template.Resources.Requests, corev1.ResourceCPU, opts.SidecarCPU, "--sidecar-cpu-request"},
		{cfg.Template.Resources.Limits, corev1.ResourceCPU, opts.SidecarCPULimit, "--sidecar-cpu-limit"},
		{cfg.Template.Resources.Requests, corev1.ResourceMemory, opts.SidecarMemory, "--sidecar-memory-request"},
		{cfg.Template.Resources.Limits, corev1.ResourceMemory, opts.SidecarMemoryMax, "--sidecar-memory-limit"},
	} {
		if q.value == "" && q.flag == "--sidecar-cpu-limit" {
			continue // no CPU limit
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return inject.Config{}, fmt.Errorf("%s %q: %w", q.flag, q.value, err)
		}
		q.list[q.name] = v
	}
	if err := cfg.Validate(); err != nil {
		return inject.Config{}, err
	}
	return cfg, nil
}

// ServerVersioner is the part of a discovery client SidecarMode needs.
type ServerVersioner interface {
	ServerVersion() (*version.Info, error)
}

// SidecarMode resolves the --sidecar-mode flag value: "auto" becomes native
// from Kubernetes 1.29 (native sidecars on by default), legacy before.
func SidecarMode(flagValue string, server ServerVersioner) (contract.Placement, error) {
	if flagValue != "auto" {
		return contract.Placement(flagValue), nil
	}
	v, err := server.ServerVersion()
	if err != nil {
		return "", fmt.Errorf("--sidecar-mode auto: read API server version: %w", err)
	}
	return modeForVersion(v.Major, v.Minor), nil
}

// modeForVersion maps a server version ("1", "28+") to a sidecar mode.
func modeForVersion(major, minor string) contract.Placement {
	trim := func(s string) int {
		for i, r := range s {
			if r < '0' || r > '9' {
				s = s[:i]
				break
			}
		}
		n, _ := strconv.Atoi(s)
		return n
	}
	if maj := trim(major); maj > 1 || (maj == 1 && trim(minor) >= 29) {
		return contract.SidecarModeNative
	}
	return contract.SidecarModeLegacy
}
