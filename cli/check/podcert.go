package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/cli/rotate"
	"github.com/podtls/podtls/cli/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

// IDPodCertificates checks the PodCertificateRequest signer's side:
// ClusterTrustBundles holding the CA's roots, refused requests, and how
// many pods use each identity source.
const IDPodCertificates = "pod-certificates"

func (r *runner) podCertificates(ctx context.Context) {
	if r.ctrl.PodCertificates == "off" {
		r.add(IDPodCertificates, output.Skip, "the controller runs with --pod-certificates off: every pod uses the agent", "")
		return
	}
	res, err := r.kube.Discovery().ServerResourcesForGroupVersion(certv1.SchemeGroupVersion.String())
	if err != nil || !slices.ContainsFunc(res.APIResources, func(a metav1.APIResource) bool { return a.Name == "clustertrustbundles" }) {
		r.add(IDPodCertificates, output.Skip, "the API server does not serve ClusterTrustBundles and PodCertificateRequests (Kubernetes < 1.37): every pod uses the agent", "")
		return
	}
	if r.mat == nil {
		r.add(IDPodCertificates, output.Skip, "ClusterTrustBundles not compared: CA Secret unreadable", "")
		return
	}
	ctbs, err := r.kube.CertificatesV1().ClusterTrustBundles().List(ctx, metav1.ListOptions{
		LabelSelector: contract.TrustBundleLabel + "=" + contract.TrustBundleLabelValue})
	if err != nil {
		r.readErr(IDPodCertificates, "ClusterTrustBundles", err)
		return
	}
	var published []*x509.Certificate
	for _, b := range ctbs.Items {
		published = append(published, rotate.Certificates([]byte(b.Spec.TrustBundle))...)
	}
	var missing []string
	for _, root := range rotate.Certificates(r.mat.TrustBundlePEM()) {
		if !slices.ContainsFunc(published, root.Equal) {
			missing = append(missing, root.Subject.String())
		}
	}
	if len(missing) > 0 {
		r.add(IDPodCertificates, output.Fail, fmt.Sprintf("%d of the CA's roots not published as ClusterTrustBundles of %s", len(missing), contract.SignerName),
			"the controller's leader publishes them every 30 s: check that it runs and its log (component cluster-trust-bundles)", missing...)
		return
	}
	pods, err := r.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		r.readErr(IDPodCertificates, "pods", err)
		return
	}
	bySource := map[string]int{}
	for i := range pods.Items {
		if p := &pods.Items[i]; inject.HasSidecar(p) && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			bySource[status.IdentitySource(p)]++
		}
	}
	msg := fmt.Sprintf("the CA's roots are published as %s; pods with the sidecar: %d podCertificate, %d agent",
		plural(len(ctbs.Items), "ClusterTrustBundle"), bySource[contract.IdentityPodCertificate], bySource[contract.IdentityAgent])
	reqs, err := r.kube.CertificatesV1().PodCertificateRequests("").List(ctx, metav1.ListOptions{})
	if err != nil {
		r.readErr(IDPodCertificates, "PodCertificateRequests", err)
		return
	}
	var refused []string
	for _, q := range reqs.Items {
		if q.Spec.SignerName != contract.SignerName {
			continue
		}
		for _, kind := range []string{certv1.PodCertificateRequestConditionTypeDenied, certv1.PodCertificateRequestConditionTypeFailed} {
			if c := meta.FindStatusCondition(q.Status.Conditions, kind); c != nil && c.Status == metav1.ConditionTrue {
				refused = append(refused, fmt.Sprintf("%s/%s (pod %s): %s %s: %s", q.Namespace, q.Name, q.Spec.PodName, kind, c.Reason, c.Message))
			}
		}
	}
	if len(refused) > 0 {
		r.add(IDPodCertificates, output.Warn, msg+fmt.Sprintf("; %s refused", plural(len(refused), "PodCertificateRequest")),
			"their pods stay pending: fix what each reason names (docs/pod-certificates.md lists them) and recreate the pod", refused...)
		return
	}
	r.add(IDPodCertificates, output.OK, msg, "")
}
