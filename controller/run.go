// Package controller is the composition root of podtls-controller: one
// controller-runtime manager running the admission webhook, the CA's sign API,
// the webhook's own serving certificate and caBundle patching, the trust-bundle
// distributor and the injection audit, endpoint discovery for sidecars, and the
// ACME manager of external certificates. main only parses flags into
// options.Options and calls Run.
package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/podtls/podtls/acme/reconciler"
	"github.com/podtls/podtls/ca"
	caserver "github.com/podtls/podtls/ca/server"
	"github.com/podtls/podtls/ca/services"
	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/discovery"
	"github.com/podtls/podtls/rollout"
	"github.com/podtls/podtls/sidecarevents"
	"github.com/podtls/podtls/tlsconfig"
	"github.com/podtls/podtls/webhook"
	"github.com/podtls/podtls/webhook/audit"
	"github.com/podtls/podtls/webhook/bundle"
	"github.com/podtls/podtls/webhook/cabundle"
	"github.com/podtls/podtls/webhook/webhookconfig"
	"github.com/podtls/podtls/workloads"
)

// Run starts everything and blocks until ctx ends (SIGTERM), then drains for
// opts.ShutdownDelay (see drainer) and shuts down gracefully within
// opts.ShutdownTimeout. It logs through slog.Default (see
// SetupLogging) and may run more than once per process.
func Run(ctx context.Context, opts options.Options, restCfg *rest.Config) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	slogger := slog.Default()
	log := slogger.With("component", "podtls-controller")

	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	mode, err := sidecarMode(opts.SidecarMode, kube)
	if err != nil {
		return err
	}

	material, err := ca.LoadOrCreate(ctx, kube, ca.SecretOptions{Namespace: opts.Namespace, Name: opts.CASecret, Logger: slogger})
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	// The CA's pod lookup reads the manager's cache; it is set once the manager exists.
	lister := &services.Lister{}
	authority, err := ca.New(material, ca.Config{TrustDomain: opts.TrustDomain, ClusterDomain: opts.ClusterDomain, Pods: lister})
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	// The webhook's own serving certificate, from the internal CA, renewed by
	// the source; the API server verifies it with the caBundle the Patcher writes.
	names, ips := webhookNames(opts)
	serving, err := ca.NewServingSource(authority, names, ips, 0, slogger.With("component", "webhook-serving"))
	if err != nil {
		return fmt.Errorf("webhook serving certificate: %w", err)
	}
	podCerts, err := podCertificates(opts, kube, log)
	if err != nil {
		return err
	}
	whHost, whPort, _ := options.SplitAddr(opts.WebhookAddr)
	drain := &drainer{}
	serveCtx, stopServing := drain.serveUntil(ctx, opts.ShutdownDelay, log)
	defer stopServing()
	metricsAddr := opts.MetricsAddr

	byObject := map[client.Object]cache.ByObject{
		// Only our own ConfigMaps, not every ConfigMap of the cluster.
		&corev1.ConfigMap{}: {Label: labels.SelectorFromSet(labels.Set{contract.ManagedByLabel: contract.ManagedByValue})},
		// Only the ACME manager's Secrets (the only Secrets read through
		// the cache; the CA reads its own with the clientset). No
		// Secret informer starts without --acme-config.
		&corev1.Secret{}: {Label: labels.SelectorFromSet(reconciler.SecretSelector())},
		// Every EndpointSlice of the cluster, for endpoint discovery,
		// reduced to what an answer needs.
		&discoveryv1.EndpointSlice{}: {Transform: discovery.TransformEndpointSlice},
	}
	if podCerts {
		podCertificateCache(byObject)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        clientgoscheme.Scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        opts.HealthAddr,
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              "podtls-controller",
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &opts.ShutdownTimeout,
		// Run may be called more than once per process (tests); controller
		// names are unique per manager anyway.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host: whHost, Port: whPort,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) {
				tlsconfig.Harden(c, tlsconfig.Options{})
				c.GetCertificate = serving.GetCertificate
			}},
		}),
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         byObject,
		},
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}

	lister.Cache, lister.API = mgr.GetCache(), mgr.GetAPIReader()

	// Endpoint discovery for http-mode sidecars, on the CA's port, on every
	// replica. Long polls end when serving stops, so shutdown does not wait.
	endpoints, err := discovery.New(serveCtx, mgr.GetCache())
	if err != nil {
		return err
	}
	discoveryHandler, err := discovery.NewHandler(discovery.HandlerOptions{
		Source: endpoints, TrustDomain: authority.TrustDomain(), TrustPool: authority.TrustPool,
		ClusterDomain: authority.ClusterDomain(), Logger: slogger, Metrics: ctrlmetrics.Registry,
	})
	if err != nil {
		return err
	}
	eventsHandler, err := sidecarevents.New(sidecarevents.Options{
		Pods: mgr.GetCache(), Recorder: mgr.GetEventRecorderFor("podtls-sidecar"),
		TrustDomain: authority.TrustDomain(), TrustPool: authority.TrustPool, Logger: slogger, Metrics: ctrlmetrics.Registry,
	})
	if err != nil {
		return err
	}
	var externalDNS []string
	var externalIPs []net.IP
	for _, n := range opts.CAExternalNames {
		if ip := net.ParseIP(n); ip != nil {
			externalIPs = append(externalIPs, ip)
		} else {
			externalDNS = append(externalDNS, n)
		}
	}
	workloadsHandler, err := workloads.NewHandler(workloads.HandlerOptions{
		Checker: &workloads.Checker{Kube: kube, Audience: signapi.Audience}, Signer: authority,
		TrustDomain: authority.TrustDomain(), TrustPool: authority.TrustPool, Logger: slogger,
	})
	if err != nil {
		return err
	}
	caSrv, err := caserver.New(caserver.Options{
		Addr:          opts.CAAddr,
		Authority:     authority,
		Authenticator: caserver.NewTokenReviewAuthenticator(kube.AuthenticationV1().TokenReviews(), caserver.TokenReviewOptions{}),
		DNSNames:      append(caserver.ServiceDNSNames(opts.ServiceName, opts.Namespace, opts.ClusterDomain), externalDNS...),
		IPs:           externalIPs,
		Logger:        slogger,
		Metrics:       ctrlmetrics.Registry,
		Discovery:     discoveryHandler,
		Events:        eventsHandler,
		Workloads:     workloadsHandler,
	})
	if err != nil {
		return fmt.Errorf("CA server: %w", err)
	}

	injectCfg, err := options.InjectConfig(opts, mode, options.Version, string(authority.TrustBundlePEM()))
	if err != nil {
		return err
	}
	injectCfg.PodCertificates = podCerts
	if injectCfg.IdentitySource, err = identityDefault(opts.IdentitySource, podCerts); err != nil {
		return err
	}
	cfgSrc := webhook.NewConfigSource(injectCfg)

	// Namespace labels for the webhook come from this informer, never from an
	// API call per admission.
	for _, obj := range []client.Object{&corev1.Namespace{}, &corev1.Service{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("informer %T: %w", obj, err)
		}
	}
	webhook.Register(drainingServer{Server: mgr.GetWebhookServer(), d: drain}, mgr.GetCache(), mgr.GetAPIReader(), cfgSrc)

	// The patcher polls the roots every minute; injected pods get the same
	// roots in PODTLS_TRUST_ROOTS, so refresh the injection config there too.
	bundleNow := func() []byte {
		b := authority.TrustBundlePEM()
		if c := cfgSrc.Load(); c.TrustRootsPEM != string(b) {
			c.TrustRootsPEM = string(b)
			cfgSrc.Store(c)
		}
		return b
	}
	patcher := &cabundle.Patcher{
		Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Name: opts.WebhookConfigName,
		URL: opts.WebhookURL, Bundle: bundleNow,
	}
	rootsChanged := make(chan struct{}, 1)
	for _, r := range []interface {
		Start(context.Context) error
	}{caSrv, serving, patcher, &ca.Refresher{
		// Every replica re-reads the CA Secret: a renewed intermediate or an
		// added root reaches all of them without a restart, and the
		// distributor rewrites every trust bundle at once.
		Authority: authority, Kube: kube,
		Secret: ca.SecretOptions{Namespace: opts.Namespace, Name: opts.CASecret, Logger: slogger},
		OnChange: func(*ca.Material) {
			// The controller's own serving certificates follow a new
			// intermediate at once: after a root rotation retires the old
			// root, a webhook or sign API still serving the old chain would
			// be refused by the API server and by every sidecar.
			for _, s := range []*ca.ServingSource{serving, caSrv.ServingSource()} {
				if err := s.Renew(); err != nil {
					log.Error("renew a serving certificate after the CA changed; the periodic renewal retries", "source", s.String(), "error", err)
				}
			}
			select {
			case rootsChanged <- struct{}{}:
			default:
			}
		},
	}} {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("add runnable: %w", err)
		}
	}
	if err := (&bundle.Distributor{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Bundle: authority.TrustBundlePEM,
		Excluded: webhookconfig.ExcludedNamespaces(opts.Namespace), RootsChanged: rootsChanged,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("trust-bundle distributor: %w", err)
	}
	if err := (&audit.Reconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("podtls-controller"), Config: cfgSrc.Load,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("injection audit: %w", err)
	}

	if podCerts {
		if err := setupPodCertificates(mgr, authority, opts, slogger); err != nil {
			return err
		}
	}

	acmeMgr := newACMEManager(opts, kube, slogger)
	if err := acmeMgr.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("ACME manager: %w", err)
	}
	if opts.ACMEConfig != "" {
		if err := setupDNSRecords(mgr, acmeMgr, kube, opts.Namespace, slogger); err != nil {
			return fmt.Errorf("DNS records: %w", err)
		}
		// Restarts for podtls.io/app-cert-reload: restart concern external
		// certificates only, which exist only with an ACME issuer.
		if err := (&rollout.Reconciler{
			Client: mgr.GetClient(), API: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorderFor("podtls-controller"),
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("app restarts: %w", err)
		}
	}

	checks := map[string]func(*http.Request) error{
		"webhook":  mgr.GetWebhookServer().StartedChecker(),
		"ca":       func(*http.Request) error { return caSrv.Ready() },
		"cabundle": func(*http.Request) error { return patcher.Ready() },
		"draining": drain.ready,
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	for name, check := range checks {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return fmt.Errorf("readyz %s: %w", name, err)
		}
	}

	log.Info("starting", "version", options.Version, "namespace", opts.Namespace, "trust_domain", opts.TrustDomain,
		"sidecar_mode", mode, "webhook_addr", opts.WebhookAddr, "ca_addr", opts.CAAddr, "leader_elect", opts.LeaderElect,
		"acme_config", opts.ACMEConfig, "pod_certificates", podCerts, "identity_source", injectCfg.IdentitySource)
	if err := mgr.Start(serveCtx); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	log.Info("stopped")
	return nil
}

// webhookNames are the DNS names and IPs of the webhook's serving certificate:
// the Service's names, plus the host of --webhook-url.
func webhookNames(opts options.Options) ([]string, []net.IP) {
	names := caserver.ServiceDNSNames(opts.ServiceName, opts.Namespace, opts.ClusterDomain)
	var ips []net.IP
	if opts.WebhookURL != "" {
		if u, err := url.Parse(opts.WebhookURL); err == nil {
			if ip := net.ParseIP(u.Hostname()); ip != nil {
				ips = append(ips, ip)
			} else if u.Hostname() != "" {
				names = append(names, u.Hostname())
			}
		}
	}
	return names, ips
}

// sidecarMode resolves "auto" from the API server's version: native sidecars
// are on by default from Kubernetes 1.29.
func sidecarMode(flagValue string, kube kubernetes.Interface) (contract.Placement, error) {
	return options.SidecarMode(flagValue, kube.Discovery())
}

// SetupLogging points every logger of the process (log/slog's default,
// controller-runtime's and client-go's klog) at one JSON handler on stderr.
// Call it once, from main, before Run: it sets process-wide state.
func SetupLogging(level string) {
	l := slog.LevelInfo
	if level == "debug" {
		// logr V(1) maps to slog level -1.
		l = slog.LevelDebug
	}
	slogger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	slog.SetDefault(slogger)
	logger := logr.FromSlogHandler(slogger.Handler())
	ctrl.SetLogger(logger)
	klog.SetLogger(logger) // client-go's own logs (leader election, warnings)
}
