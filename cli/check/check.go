// Package check runs the health checks of `podtls check` against a cluster:
// controller pods, webhook configuration and serving certificate, CA root
// and intermediate, trust bundles, ACME issuer, account and certificates,
// and pods that missed injection. Each check yields one Result with a level
// and, unless it is ok, a one-line hint. The JSON form of Report is a stable,
// documented interface (docs/cli.md): fields are only ever added.
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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/injectconfig"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/tlsconfig"
	"github.com/podtls/podtls/webhook/inject"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

// SchemaVersion identifies the JSON layout of Report.
const SchemaVersion = "podtls.io/check/v1"

// Check IDs: stable, part of the JSON schema.
const (
	IDControllerPods     = "controller-pods"
	IDCASecret           = "ca-secret"
	IDCARoot             = "ca-root"
	IDCAIntermediate     = "ca-intermediate"
	IDWebhookConfig      = "webhook-config"
	IDWebhookCABundle    = "webhook-cabundle"
	IDWebhookServingCert = "webhook-serving-cert"
	IDTrustBundles       = "trust-bundles"
	IDACMEIssuer         = "acme-issuer"
	IDACMEAccount        = "acme-account"
	IDExternalCerts      = "external-certs"
	IDUninjectedPods     = "uninjected-pods"
)

// ACMEConfigMap and ACMEConfigKey hold the issuer configuration the chart renders.
const (
	ACMEConfigMap = "podtls-acme"
	ACMEConfigKey = "config.yaml"
)

// Result is one line of the report.
type Result struct {
	ID      string       `json:"id"`
	Level   output.Level `json:"level"`
	Message string       `json:"message"`
	Hint    string       `json:"hint,omitempty"`
	// Objects names what failed ("namespace/name: detail"), when several can.
	Objects []string `json:"objects,omitempty"`
}

// Report is the whole outcome.
type Report struct {
	Schema string       `json:"schema"`
	Level  output.Level `json:"level"` // worst level of all checks
	Checks []Result     `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool { return r.Level == output.Fail }

// Options configure Run.
type Options struct {
	// Namespace of the controller.
	Namespace string
	// MinValidity the webhook's serving certificate must have left.
	MinValidity time.Duration
	// WarnBefore: CA certificates expiring sooner are a warning (30 days),
	// FailBefore: sooner still, a failure (7 days): leaves cannot outlive
	// the intermediate, so the mesh stops soon after.
	WarnBefore time.Duration
	FailBefore time.Duration
	// Now is time.Now when nil.
	Now func() time.Time
	// DialTimeout for the webhook's serving certificate.
	DialTimeout time.Duration
}

// DefaultOptions are the flag defaults.
func DefaultOptions() Options {
	return Options{Namespace: "podtls-system", MinValidity: 2 * time.Hour, WarnBefore: 30 * 24 * time.Hour, FailBefore: 7 * 24 * time.Hour, DialTimeout: 3 * time.Second}
}

type runner struct {
	kube kubernetes.Interface
	opts Options
	now  time.Time
	ctrl options.Options
	mat  *ca.Material
	res  []Result
}

// Run runs every check. It does not fail as a whole: every problem becomes
// a Result.
func Run(ctx context.Context, kube kubernetes.Interface, opts Options) Report {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 3 * time.Second
	}
	r := &runner{kube: kube, opts: opts, now: opts.Now()}
	r.controllerPods(ctx)
	r.caSecret(ctx)
	r.webhook(ctx)
	r.trustBundles(ctx)
	r.acme(ctx)
	r.externalCerts(ctx)
	r.uninjected(ctx)
	rep := Report{Schema: SchemaVersion, Level: output.OK, Checks: r.res}
	for _, c := range r.res {
		if c.Level.Severity() > rep.Level.Severity() && c.Level != output.Skip {
			rep.Level = c.Level
		}
	}
	return rep
}

func (r *runner) add(id string, l output.Level, msg, hint string, objects ...string) {
	r.res = append(r.res, Result{ID: id, Level: l, Message: msg, Hint: hint, Objects: objects})
}

// readErr turns an API error into a result: forbidden is a warning (the
// user may lack RBAC), anything else a failure.
func (r *runner) readErr(id, what string, err error) {
	if apierrors.IsForbidden(err) {
		r.add(id, output.Warn, "cannot read "+what+": forbidden", "ask for read access to "+what+", or run as a cluster admin")
		return
	}
	r.add(id, output.Fail, fmt.Sprintf("cannot read %s: %v", what, err), "check the kubeconfig and that the API server is reachable")
}

func (r *runner) controllerPods(ctx context.Context) {
	ns := r.opts.Namespace
	r.ctrl = options.DefaultOptions()
	r.ctrl.Namespace = ns
	d, err := r.kube.AppsV1().Deployments(ns).Get(ctx, injectconfig.DeploymentName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.add(IDControllerPods, output.Fail, fmt.Sprintf("Deployment %s/%s not found", ns, injectconfig.DeploymentName),
			"install podtls (helm install podtls charts/podtls -n "+ns+" --create-namespace), or pass --controller-namespace")
		return
	case err != nil:
		r.readErr(IDControllerPods, "Deployment "+ns+"/"+injectconfig.DeploymentName, err)
		return
	}
	o, _, argErr := injectconfig.FromDeployment(ctx, r.kube, ns)
	if argErr == nil {
		r.ctrl = o
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		r.add(IDControllerPods, output.Fail, "Deployment selector: "+err.Error(), "fix the Deployment's spec.selector")
		return
	}
	pods, err := r.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		r.readErr(IDControllerPods, "pods in "+ns, err)
		return
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	var ready int32
	var notReady []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			ready++
		} else {
			notReady = append(notReady, ns+"/"+p.Name+": "+podPhase(&p))
		}
	}
	msg := fmt.Sprintf("controller pods ready: %d of %d", ready, want)
	switch {
	case ready == 0:
		r.add(IDControllerPods, output.Fail, msg,
			"no controller pod is ready: kubectl -n "+ns+" describe pods -l "+sel.String()+"; kubectl -n "+ns+" logs deploy/"+injectconfig.DeploymentName, notReady...)
	case ready < want:
		r.add(IDControllerPods, output.Warn, msg, "some replicas are not ready: kubectl -n "+ns+" get pods -l "+sel.String(), notReady...)
	case argErr != nil:
		r.add(IDControllerPods, output.Warn, msg+"; their arguments are not understood, defaults assumed",
			"is this podtls CLI older than the controller? "+argErr.Error())
	default:
		r.add(IDControllerPods, output.OK, msg, "")
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podPhase(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	if p.Status.Phase == "" {
		return "pending"
	}
	return strings.ToLower(string(p.Status.Phase)) + ", not ready"
}

func (r *runner) caSecret(ctx context.Context) {
	r.caSecretChecks(ctx)
	if r.mat == nil {
		r.add(IDCARoot, output.Skip, "CA root not checked: CA Secret unreadable", "")
		r.add(IDCAIntermediate, output.Skip, "CA intermediate not checked: CA Secret unreadable", "")
	}
}

func (r *runner) caSecretChecks(ctx context.Context) {
	ns, name := r.ctrl.Namespace, r.ctrl.CASecret
	sec, err := r.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.add(IDCASecret, output.Fail, fmt.Sprintf("CA Secret %s/%s not found", ns, name),
			"the controller creates it at start: check its logs (kubectl -n "+ns+" logs deploy/"+injectconfig.DeploymentName+")")
		return
	case err != nil:
		r.readErr(IDCASecret, "Secret "+ns+"/"+name, err)
		return
	}
	m, err := ca.MaterialFromSecret(sec)
	if err != nil {
		r.add(IDCASecret, output.Fail, fmt.Sprintf("CA Secret %s/%s: %v", ns, name, err),
			"the Secret needs tls.crt (intermediate), tls.key and ca.crt (roots): see docs/controller.md")
		return
	}
	r.mat = m
	if err := m.Validate(r.now); err != nil {
		r.add(IDCASecret, output.Fail, fmt.Sprintf("CA Secret %s/%s: %v", ns, name, err),
			"replace the intermediate (or delete a generated CA Secret and restart the controller; every sidecar then needs the new roots)")
	} else {
		r.add(IDCASecret, output.OK, fmt.Sprintf("CA Secret %s/%s valid", ns, name), "")
	}
	for _, root := range append(slices.Clone(m.Roots), m.ExtraRoots...) {
		r.expiry(IDCARoot, "CA root "+root.Subject.CommonName, root,
			"add the next root to ca-bundle.crt in the CA Secret, wait for the trust bundles to spread, then switch the intermediate")
	}
	hint := "replace tls.crt/tls.key in the CA Secret with a new intermediate"
	if m.RootKey != nil {
		hint = "restart the controller: it renews a generated intermediate within 30 days of expiry (kubectl -n " + ns + " rollout restart deploy/" + injectconfig.DeploymentName + ")"
	}
	r.expiry(IDCAIntermediate, "CA intermediate "+m.Intermediate.Subject.CommonName, m.Intermediate, hint)
}

// expiry reports a certificate's remaining validity against WarnBefore.
func (r *runner) expiry(id, what string, c *x509.Certificate, hint string) {
	left := c.NotAfter.Sub(r.now)
	msg := fmt.Sprintf("%s expires %s (%s)", what, c.NotAfter.UTC().Format("2006-01-02"), Duration(left))
	switch {
	case left <= 0:
		r.add(id, output.Fail, fmt.Sprintf("%s expired %s", what, c.NotAfter.UTC().Format(time.RFC3339)), hint)
	case left < r.opts.FailBefore:
		r.add(id, output.Fail, msg, hint)
	case left < r.opts.WarnBefore:
		r.add(id, output.Warn, msg, hint)
	default:
		r.add(id, output.OK, msg, "")
	}
}

// Duration renders a remaining time coarsely: "45d", "20h", "12m", "expired".
func Duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "expired"
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd left", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh left", int(d.Hours()))
	default:
		return fmt.Sprintf("%dm left", int(d.Minutes()))
	}
}

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

func (r *runner) acme(ctx context.Context) {
	r.acmeChecks(ctx)
	if !slices.ContainsFunc(r.res, func(c Result) bool { return c.ID == IDACMEAccount }) {
		r.add(IDACMEAccount, output.Skip, "ACME account not checked: no usable issuer configuration", "")
	}
}

func (r *runner) acmeChecks(ctx context.Context) {
	ns := r.ctrl.Namespace
	cm, err := r.kube.CoreV1().ConfigMaps(ns).Get(ctx, ACMEConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.add(IDACMEIssuer, output.Skip, fmt.Sprintf("no ACME issuer configured (ConfigMap %s/%s): external hosts get no certificates", ns, ACMEConfigMap), "")
		return
	case err != nil:
		r.readErr(IDACMEIssuer, "ConfigMap "+ns+"/"+ACMEConfigMap, err)
		return
	}
	raw, ok := cm.Data[ACMEConfigKey]
	if !ok {
		r.add(IDACMEIssuer, output.Fail, fmt.Sprintf("ConfigMap %s/%s has no key %s", ns, ACMEConfigMap, ACMEConfigKey), "set acme.* in the Helm values")
		return
	}
	// The controller's own parser and defaults; the providers compiled into
	// the controller are not known here (the CLI links none), so only their
	// names and settings go unchecked.
	c, err := issuerconfig.Parse([]byte(raw), nil)
	if err != nil {
		r.add(IDACMEIssuer, output.Fail, fmt.Sprintf("ConfigMap %s/%s: %v", ns, ACMEConfigMap, err), "fix acme.* in the Helm values (docs/acme.md)")
		return
	}
	r.add(IDACMEIssuer, output.OK, fmt.Sprintf("ACME issuer %s, DNS-01 via %s", c.DirectoryURL, c.DNS.Provider), "")

	sec, err := r.kube.CoreV1().Secrets(ns).Get(ctx, c.AccountSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.add(IDACMEAccount, output.Fail, fmt.Sprintf("ACME account Secret %s/%s not found", ns, c.AccountSecret),
			"the controller registers the account at start: check its logs")
		return
	case err != nil:
		r.readErr(IDACMEAccount, "Secret "+ns+"/"+c.AccountSecret, err)
		return
	}
	acct, err := status.DecodeAccount(sec.Annotations)
	switch {
	case err != nil:
		r.add(IDACMEAccount, output.Fail, err.Error(), "the annotations of the account Secret were edited by hand; remove the broken one")
	case !acct.Registered(c.DirectoryURL):
		msg := "ACME account not registered at " + c.DirectoryURL
		if acct.LastError != "" {
			msg += ": " + acct.LastError
		}
		r.add(IDACMEAccount, output.Fail, msg, "check the directory URL, the EAB settings and the controller's logs")
	default:
		r.add(IDACMEAccount, output.OK, "ACME account registered: "+acct.URI, "")
	}
}

func (r *runner) externalCerts(ctx context.Context) {
	sel := labels.SelectorFromSet(labels.Set{contract.ManagedByLabel: contract.ManagedByValue, contract.ComponentLabel: status.ComponentExternalCert})
	secs, err := r.kube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		r.readErr(IDExternalCerts, "external-certificate Secrets", err)
		return
	}
	if len(secs.Items) == 0 {
		r.add(IDExternalCerts, output.OK, "no external certificates", "")
		return
	}
	var failing, expiring, pending []string
	for _, s := range secs.Items {
		ref := s.Namespace + "/" + s.Name
		e, err := status.Decode(s.Annotations)
		switch {
		case err != nil:
			failing = append(failing, ref+": "+err.Error())
		case e.Issued() && !e.NotAfter.After(r.now):
			failing = append(failing, ref+": expired "+e.NotAfter.UTC().Format(time.RFC3339))
		case e.Issued() && e.NotAfter.Sub(r.now) < e.NotAfter.Sub(e.NotBefore)/10:
			// Renewal is planned at 2/3 of the lifetime: under a tenth left,
			// it has failed for a long time, whatever the annotations say.
			failing = append(failing, fmt.Sprintf("%s: expires %s (%s), not renewed", ref,
				e.NotAfter.UTC().Format(time.RFC3339), Duration(e.NotAfter.Sub(r.now))))
		case e.Failing():
			failing = append(failing, fmt.Sprintf("%s: %d failures: %s", ref, e.Failures, e.LastError))
		case !e.Issued():
			pending = append(pending, ref+": not issued yet")
		case !e.RenewAt.IsZero() && r.now.After(e.RenewAt.Add(time.Hour)):
			expiring = append(expiring, fmt.Sprintf("%s: renewal overdue since %s, expires %s", ref,
				e.RenewAt.UTC().Format(time.RFC3339), e.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	n := len(secs.Items)
	switch {
	case len(failing) > 0:
		r.add(IDExternalCerts, output.Fail, fmt.Sprintf("%d of %d external certificates failing", len(failing), n),
			"see the Secret's podtls.io/last-error and the pod's Events; force a retry with kubectl annotate secret NAME podtls.io/force-renew=$(date +%s)",
			append(failing, expiring...)...)
	case len(expiring) > 0 || len(pending) > 0:
		r.add(IDExternalCerts, output.Warn, fmt.Sprintf("%d of %d external certificates pending or overdue", len(expiring)+len(pending), n),
			"a first issuance takes up to a few minutes (DNS propagation); check the controller's logs if it lasts", append(expiring, pending...)...)
	default:
		r.add(IDExternalCerts, output.OK, fmt.Sprintf("%s issued and current", plural(n, "external certificate")), "")
	}
}

func (r *runner) uninjected(ctx context.Context) {
	cfg, err := injectconfig.DecideConfig(r.ctrl)
	if err != nil {
		r.add(IDUninjectedPods, output.Fail, "controller arguments: "+err.Error(), "fix the controller Deployment's arguments")
		return
	}
	nss, err := r.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		r.readErr(IDUninjectedPods, "namespaces", err)
		return
	}
	byName := map[string]*corev1.Namespace{}
	for i := range nss.Items {
		byName[nss.Items[i].Name] = &nss.Items[i]
	}
	pods, err := r.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		r.readErr(IDUninjectedPods, "pods", err)
		return
	}
	var missing []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		// The same decision the webhook takes: never a second implementation.
		if d := inject.Decide(p, byName[p.Namespace], cfg); d.Inject {
			missing = append(missing, fmt.Sprintf("%s/%s: %s", p.Namespace, p.Name, reasons(d.Reasons)))
		}
	}
	if len(missing) > 0 {
		r.add(IDUninjectedPods, output.Fail, fmt.Sprintf("%s should have the sidecar but do not", plural(len(missing), "pod")),
			"they were admitted while the webhook was unavailable or before the namespace was labelled: recreate them (kubectl delete pod, or kubectl rollout restart)", missing...)
		return
	}
	r.add(IDUninjectedPods, output.OK, fmt.Sprintf("every pod that asks for the sidecar has it (%s checked)", plural(len(pods.Items), "pod")), "")
}

func reasons(rs []inject.ReasonCode) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

// plural is "1 pod", "2 pods".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
