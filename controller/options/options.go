// Package options is podtls-controller's flag contract: Options with their
// defaults, flags and validation, the mapping to the injection config, and the
// build version. It is light on purpose: the podtls CLI imports it, and it must
// never pull in the controller's manager, the CA, lego or cloud SDKs.
package options

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/podtls/podtls/identity"
)

// Version is stamped at build time (-ldflags -X) and recorded on injected pods.
var Version = "dev"

// Options are the controller's settings; every field has a flag.
type Options struct {
	Namespace         string
	TrustDomain       string
	ClusterDomain     string
	ServiceName       string
	WebhookAddr       string
	CAAddr            string
	MetricsAddr       string
	HealthAddr        string
	WebhookConfigName string
	WebhookURL        string
	CAURL             string
	CAExternalNames   []string
	CASecret          string
	SidecarImage      string
	SidecarPullPolicy string
	SidecarMode       string
	SidecarCPU        string
	// SidecarCPULimit is empty by default: no CPU limit (see docs/controller.md).
	SidecarCPULimit  string
	SidecarMemory    string
	SidecarMemoryMax string
	LeaderElect      bool
	LogLevel         string
	ShutdownTimeout  time.Duration
	// ShutdownDelay is how long a stopping replica keeps serving, draining, before its
	// servers stop.
	ShutdownDelay time.Duration
	// ACMEConfig is the ACME issuer configuration file; empty: ACME off.
	ACMEConfig string
	// PodCertificates is "auto" (sign PodCertificateRequests of
	// contract.SignerName and publish ClusterTrustBundles where the API
	// server serves them) or "off".
	PodCertificates string
	// IdentitySource is the default identity source of injected pods:
	// "agent", "podCertificate" or "auto" (podCertificate where this
	// controller signs pod certificates).
	IdentitySource string
	// PodCertRefreshFraction, when set, puts beginRefreshAt at this
	// fraction of a pod certificate's lifetime instead of the mesh rule
	// (a test mode: kubelet refreshes early).
	PodCertRefreshFraction float64
}

// DefaultOptions are the flag defaults.
func DefaultOptions() Options {
	return Options{
		Namespace:         "podtls-system",
		TrustDomain:       identity.DefaultTrustDomain,
		ClusterDomain:     identity.DefaultClusterDomain,
		ServiceName:       "podtls-controller",
		WebhookAddr:       ":9443",
		CAAddr:            ":8443",
		MetricsAddr:       ":8080",
		HealthAddr:        ":8081",
		WebhookConfigName: "podtls",
		CASecret:          "podtls-ca",
		SidecarImage:      "ghcr.io/podtls/podtls-sidecar:" + Version,
		SidecarPullPolicy: string(corev1.PullIfNotPresent),
		SidecarMode:       "auto",
		SidecarCPU:        "10m",
		SidecarMemory:     "16Mi",
		SidecarMemoryMax:  "128Mi",
		LogLevel:          "info",
		ShutdownTimeout:   30 * time.Second,
		ShutdownDelay:     5 * time.Second,
		PodCertificates:   "auto",
		IdentitySource:    "agent",
	}
}

// BindFlags registers every option on fs. controller-runtime registers the
// global --kubeconfig itself.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace the controller runs in: holds the CA Secret and the leader-election lease; never injected")
	fs.StringVar(&o.TrustDomain, "trust-domain", o.TrustDomain, "SPIFFE trust domain of workload identities")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "DNS suffix of Services (NAME.NS.svc.CLUSTER-DOMAIN)")
	fs.StringVar(&o.ServiceName, "service-name", o.ServiceName, "name of the controller's Service (CA on 8443, webhook on 443); used for serving certificates and the default --ca-url")
	fs.StringVar(&o.WebhookAddr, "webhook-addr", o.WebhookAddr, "address of the admission webhook's HTTPS server")
	fs.StringVar(&o.CAAddr, "ca-addr", o.CAAddr, "address of the CA's HTTPS sign API")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, `address of the Prometheus /metrics endpoint ("0" disables it)`)
	fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "address of the /healthz and /readyz endpoints")
	fs.StringVar(&o.WebhookConfigName, "webhook-config-name", o.WebhookConfigName, "MutatingWebhookConfiguration whose caBundle the controller keeps current")
	fs.StringVar(&o.WebhookURL, "webhook-url", o.WebhookURL, "base URL (https://host:port) the API server reaches the webhook at, instead of the Service; rewrites the configuration's client config and adds the host to the serving certificate")
	fs.StringVar(&o.CAURL, "ca-url", o.CAURL, "URL sidecars use to reach the CA (default https://SERVICE-NAME.NAMESPACE.svc:8443)")
	fs.Func("ca-external-name", "DNS `NAME` or IP address machines outside the cluster reach the CA at (podtls workload register), added to its serving certificate (repeatable)", func(v string) error {
		o.CAExternalNames = append(o.CAExternalNames, v)
		return nil
	})
	fs.StringVar(&o.CASecret, "ca-secret", o.CASecret, "Secret in --namespace holding the CA's root and intermediate; created if missing")
	fs.StringVar(&o.SidecarImage, "sidecar-image", o.SidecarImage, "image of the injected podtls-sidecar")
	fs.StringVar(&o.SidecarPullPolicy, "sidecar-image-pull-policy", o.SidecarPullPolicy, "imagePullPolicy of the injected sidecar: Always, IfNotPresent or Never")
	fs.StringVar(&o.SidecarMode, "sidecar-mode", o.SidecarMode, `how the sidecar is injected: "native" (init container with restartPolicy Always, Kubernetes >= 1.29), "legacy", or "auto" (from the API server's version)`)
	fs.StringVar(&o.SidecarCPU, "sidecar-cpu-request", o.SidecarCPU, "CPU request of the sidecar")
	fs.StringVar(&o.SidecarCPULimit, "sidecar-cpu-limit", o.SidecarCPULimit, `CPU limit of the sidecar, e.g. "1"; empty: none (namespaces whose ResourceQuota requires limits.cpu need one)`)
	fs.StringVar(&o.SidecarMemory, "sidecar-memory-request", o.SidecarMemory, "memory request of the sidecar")
	fs.StringVar(&o.SidecarMemoryMax, "sidecar-memory-limit", o.SidecarMemoryMax, "memory limit of the sidecar; the sidecar's --max-connections follows it (75 % of it, less 16 MiB, at 144 KiB per connection)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader for the reconcilers (trust-bundle distributor, injection audit, ACME manager); webhook and CA run on every replica")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, `"info", or "debug" to log every admission decision with its reason codes`)
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "after SIGTERM, how long to keep serving with readiness failing and connections closed after each response, so Services and the API server move to another replica before the servers stop")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long in-flight requests may finish once the servers stop (after --shutdown-delay)")
	fs.StringVar(&o.PodCertificates, "pod-certificates", o.PodCertificates, `"auto": sign the PodCertificateRequests of signer podtls.io/mesh and publish the CA's roots as ClusterTrustBundles where the API server serves them (Kubernetes >= 1.37); "off"`)
	fs.StringVar(&o.IdentitySource, "identity-source", o.IdentitySource, `default identity source of injected pods (podtls.io/identity overrides it): "agent" (the sidecar asks the sign API with a projected token), "podCertificate" (the kubelet gets the certificate from this controller's PodCertificateRequest signer; Kubernetes >= 1.37), or "auto" (podCertificate where the signer runs, else agent)`)
	fs.Float64Var(&o.PodCertRefreshFraction, "pod-certificate-refresh-fraction", o.PodCertRefreshFraction, "test mode: tell kubelets to refresh pod certificates at this fraction of their lifetime (at least 10 minutes after issue); 0: the mesh rule, 60-70 %")
	fs.StringVar(&o.ACMEConfig, "acme-config", o.ACMEConfig, "ACME issuer configuration file (YAML, see docs/acme.md), re-read when its content changes; empty: no external certificates (pods asking for them get an Event)")
}

// Validate checks the options and fills in derived defaults.
func (o *Options) Validate() error {
	if err := identity.ValidateTrustDomain(o.TrustDomain); err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	if o.Namespace == "" {
		return fmt.Errorf("--namespace is empty")
	}
	if o.ShutdownDelay < 0 || o.ShutdownTimeout < 0 {
		return fmt.Errorf("--shutdown-delay %s and --shutdown-timeout %s must not be negative", o.ShutdownDelay, o.ShutdownTimeout)
	}
	for flagName, v := range map[string]string{"--webhook-addr": o.WebhookAddr, "--ca-addr": o.CAAddr} {
		if _, _, err := SplitAddr(v); err != nil {
			return fmt.Errorf("%s %q: %w", flagName, v, err)
		}
	}
	for _, n := range o.CAExternalNames {
		if net.ParseIP(n) == nil && identity.ValidateDNSName(n) != nil {
			return fmt.Errorf("--ca-external-name %q: want a DNS name or an IP address", n)
		}
	}
	if o.WebhookURL != "" {
		u, err := url.Parse(o.WebhookURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("--webhook-url %q: want https://host:port without a path", o.WebhookURL)
		}
		o.WebhookURL = "https://" + u.Host
	}
	if o.CAURL == "" {
		o.CAURL = fmt.Sprintf("https://%s.%s.svc:8443", o.ServiceName, o.Namespace)
	}
	if o.PodCertificates != "auto" && o.PodCertificates != "off" {
		return fmt.Errorf("--pod-certificates %q: want auto or off", o.PodCertificates)
	}
	switch o.IdentitySource {
	case "agent", "podCertificate", "auto":
	default:
		return fmt.Errorf("--identity-source %q: want agent, podCertificate or auto", o.IdentitySource)
	}
	if o.IdentitySource == "podCertificate" && o.PodCertificates == "off" {
		return errors.New("--identity-source podCertificate needs the pod-certificate signer: not with --pod-certificates off")
	}
	if o.PodCertRefreshFraction < 0 || o.PodCertRefreshFraction >= 1 {
		return fmt.Errorf("--pod-certificate-refresh-fraction %v: want 0 (the mesh rule) or a fraction below 1", o.PodCertRefreshFraction)
	}
	switch o.SidecarMode {
	case "auto", "native", "legacy":
	default:
		return fmt.Errorf("--sidecar-mode %q: want auto, native or legacy", o.SidecarMode)
	}
	switch corev1.PullPolicy(o.SidecarPullPolicy) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--sidecar-image-pull-policy %q: want Always, IfNotPresent or Never", o.SidecarPullPolicy)
	}
	for flagName, v := range map[string]string{"--sidecar-cpu-request": o.SidecarCPU, "--sidecar-cpu-limit": o.SidecarCPULimit,
		"--sidecar-memory-request": o.SidecarMemory, "--sidecar-memory-limit": o.SidecarMemoryMax} {
		if v == "" && flagName == "--sidecar-cpu-limit" {
			continue
		}
		if _, err := resource.ParseQuantity(v); err != nil {
			return fmt.Errorf("%s %q: %w", flagName, v, err)
		}
	}
	switch o.LogLevel {
	case "info", "debug":
	default:
		return fmt.Errorf("--log-level %q: want info or debug", o.LogLevel)
	}
	return nil
}

// SplitAddr splits "host:port" with a numeric port.
func SplitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}
