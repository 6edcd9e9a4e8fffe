package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/podtls/podtls/cli/injectconfig"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/tlsconfig"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

func (r *runner) webhook(ctx context.Context) {
	name := r.ctrl.WebhookConfigName
	mwc, err := r.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.add(IDWebhookConfig, output.Fail, fmt.Sprintf("MutatingWebhookConfiguration %s not found: no pod gets a sidecar", name),
			"reinstall it: helm upgrade --install podtls charts/podtls -n "+r.ctrl.Namespace+" (the controller patches but never creates it)")
		r.add(IDWebhookCABundle, output.Skip, "caBundle not compared: no webhook configuration", "")
		r.add(IDWebhookServingCert, output.Skip, "serving certificate not checked: no webhook configuration", "")
		return
	case err != nil:
		r.readErr(IDWebhookConfig, "MutatingWebhookConfiguration "+name, err)
		return
	}
	var missing []string
	for _, want := range []string{webhookconfig.LabelledWebhook, webhookconfig.OptInWebhook} {
		if !slices.ContainsFunc(mwc.Webhooks, func(w admissionWebhook) bool { return w.Name == want }) {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		r.add(IDWebhookConfig, output.Fail, fmt.Sprintf("MutatingWebhookConfiguration %s lacks webhooks %s", name, strings.Join(missing, ", ")),
			"reinstall it: helm upgrade --install podtls charts/podtls -n "+r.ctrl.Namespace)
	} else {
		r.add(IDWebhookConfig, output.OK, fmt.Sprintf("MutatingWebhookConfiguration %s present", name), "")
	}
	if r.mat == nil {
		r.add(IDWebhookCABundle, output.Skip, "caBundle not compared: CA Secret unreadable", "")
		r.add(IDWebhookServingCert, output.Skip, "serving certificate not checked: CA Secret unreadable", "")
		return
	}
	want := string(r.mat.TrustBundlePEM())
	var stale []string
	for _, w := range mwc.Webhooks {
		if string(w.ClientConfig.CABundle) != want {
			stale = append(stale, w.Name)
		}
	}
	if len(stale) > 0 {
		r.add(IDWebhookCABundle, output.Fail, "caBundle differs from the CA roots: the API server cannot verify the webhook",
			"the controller patches it within a minute of start; if it persists, see kubectl -n "+r.ctrl.Namespace+" logs deploy/"+injectconfig.DeploymentName, stale...)
	} else {
		r.add(IDWebhookCABundle, output.OK, "caBundle equals the CA roots", "")
	}
	r.servingCert(ctx, mwc.Webhooks)
}

func (r *runner) servingCert(ctx context.Context, hooks []admissionWebhook) {
	var target string
	for _, w := range hooks {
		if w.ClientConfig.URL != nil {
			target = *w.ClientConfig.URL
			break
		}
	}
	if target == "" {
		r.add(IDWebhookServingCert, output.Skip,
			"serving certificate not dialled: the webhook is reached through its Service, which only the API server can reach; the caBundle check above covers its issuer", "")
		return
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		r.add(IDWebhookServingCert, output.Fail, fmt.Sprintf("webhook URL %q is not a URL", target), "fix clientConfig.url or the controller's --webhook-url")
		return
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.mat.TrustBundlePEM())
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: r.opts.DialTimeout},
		Config: tlsconfig.PublicClient(pool, u.Hostname(), tlsconfig.Options{Now: r.opts.Now})}
	dctx, cancel := context.WithTimeout(ctx, r.opts.DialTimeout)
	defer cancel()
	conn, err := dialer.DialContext(dctx, "tcp", host)
	if err != nil {
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			r.add(IDWebhookServingCert, output.Fail, "webhook serving certificate does not verify against the CA roots: "+err.Error(),
				"restart the controller so it issues a new serving certificate from the current CA")
			return
		}
		r.add(IDWebhookServingCert, output.Skip, fmt.Sprintf("webhook at %s not reachable from here (%v)", host, err), "")
		return
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	left := leaf.NotAfter.Sub(r.now)
	msg := fmt.Sprintf("webhook serving certificate verifies, expires %s (%s)", leaf.NotAfter.UTC().Format("2006-01-02 15:04Z"), Duration(left))
	if left < r.opts.MinValidity {
		r.add(IDWebhookServingCert, output.Fail, msg,
			fmt.Sprintf("less than --min-validity %s left: the controller renews it at 2/3 of its life; check its logs", r.opts.MinValidity))
		return
	}
	r.add(IDWebhookServingCert, output.OK, msg, "")
}

func (r *runner) trustBundles(ctx context.Context) {
	nss, err := r.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{contract.Inject: contract.NamespaceEnabled}).String()})
	if err != nil {
		r.readErr(IDTrustBundles, "namespaces", err)
		return
	}
	if r.mat == nil {
		r.add(IDTrustBundles, output.Skip, "trust bundles not compared: CA Secret unreadable", "")
		return
	}
	// One list call for every namespace's bundle, not a GET per namespace.
	cms, err := r.kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", contract.TrustBundleConfigMap).String()})
	if err != nil {
		r.readErr(IDTrustBundles, "ConfigMaps "+contract.TrustBundleConfigMap, err)
		return
	}
	bundles := map[string]string{}
	for _, cm := range cms.Items {
		if cm.Name != contract.TrustBundleConfigMap {
			continue // fake clients ignore field selectors
		}
		bundles[cm.Namespace] = cm.Data[contract.TrustBundleKey]
	}
	want := string(r.mat.TrustBundlePEM())
	excluded := webhookconfig.ExcludedNamespaces(r.ctrl.Namespace)
	var bad []string
	n := 0
	for _, ns := range nss.Items {
		if slices.Contains(excluded, ns.Name) || ns.DeletionTimestamp != nil {
			continue
		}
		n++
		switch got, ok := bundles[ns.Name]; {
		case !ok:
			bad = append(bad, ns.Name+": missing")
		case got != want:
			bad = append(bad, ns.Name+": differs from the CA roots")
		}
	}
	if len(bad) > 0 {
		r.add(IDTrustBundles, output.Fail,
			fmt.Sprintf("trust bundle %s not current in %d of %d labelled namespaces", contract.TrustBundleConfigMap, len(bad), n),
			"the controller's distributor writes it within seconds; if it persists, check the controller is running and its logs", bad...)
		return
	}
	r.add(IDTrustBundles, output.OK, fmt.Sprintf("trust bundle current in %s", plural(n, "labelled namespace")), "")
}
