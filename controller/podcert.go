package controller

import (
	"errors"
	"fmt"
	"log/slog"

	certv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/podcert"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/renewal"
)

// podCertificates reports whether this controller signs pod certificates:
// --pod-certificates auto and an API server that serves them.
func podCertificates(opts options.Options, kube kubernetes.Interface, log *slog.Logger) (bool, error) {
	if opts.PodCertificates == "off" {
		return false, nil
	}
	served, err := podcert.Served(kube.Discovery())
	if err != nil {
		return false, err
	}
	if !served {
		log.Info("the API server does not serve certificates.k8s.io/v1 PodCertificateRequests and ClusterTrustBundles (Kubernetes < 1.37): pods get their certificates from the sidecar's agent only")
	}
	return served, nil
}

// podCertificateCache watches only the requests of podtls's signer.
func podCertificateCache(byObject map[client.Object]cache.ByObject) {
	byObject[&certv1.PodCertificateRequest{}] = cache.ByObject{Field: fields.OneTermEqualSelector("spec.signerName", contract.SignerName)}
}

// setupPodCertificates adds the signer and the ClusterTrustBundle publisher
// (both leader only) to mgr.
func setupPodCertificates(mgr ctrl.Manager, authority *ca.Authority, opts options.Options, slogger *slog.Logger) error {
	m, err := podcert.NewMetrics(ctrlmetrics.Registry)
	if err != nil {
		return fmt.Errorf("pod certificate metrics: %w", err)
	}
	s := &podcert.Signer{Client: mgr.GetClient(), API: mgr.GetAPIReader(), Authority: authority, Metrics: m,
		Log: slogger.With("component", "pod-certificate-signer")}
	if f := opts.PodCertRefreshFraction; f > 0 {
		s.Refresh = renewal.Fraction(f)
	}
	if err := s.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("pod certificate signer: %w", err)
	}
	return mgr.Add(&podcert.Publisher{Client: mgr.GetClient(), API: mgr.GetAPIReader(), Bundle: authority.TrustBundlePEM,
		Log: slogger.With("component", "cluster-trust-bundles")})
}

// identityDefault resolves --identity-source for this cluster: auto is
// podCertificate where the signer runs. podCertificate where it cannot run
// is an error at start, not a pod stuck pending.
func identityDefault(flag string, podCerts bool) (string, error) {
	switch {
	case flag == contract.IdentityAuto && podCerts, flag == contract.IdentityPodCertificate && podCerts:
		return contract.IdentityPodCertificate, nil
	case flag == contract.IdentityPodCertificate:
		return "", errors.New("--identity-source podCertificate: the API server does not serve PodCertificateRequests and ClusterTrustBundles (Kubernetes >= 1.37)")
	}
	return contract.IdentityAgent, nil
}
