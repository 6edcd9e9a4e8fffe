// Package check runs the health checks of `podtls check` against a cluster:
// controller pods, webhook configuration and serving certificate, CA root
// and intermediate, trust bundles, ACME issuer, account and certificates,
// pods that missed injection, and app ports reachable around the sidecar. Each check yields one Result with a level
// and, unless it is ok, a one-line hint. The JSON form of Report is a stable,
// documented interface (docs/cli.md): fields are only ever added.
package check

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/controller/options"
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
	IDPlaintextBypass    = "plaintext-bypass"
	IDAppFiles           = "app-files"
	IDDNSRecords         = "dns-records"
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
	// Proxy reads a sidecar's admin endpoint; nil is kube.AdminGet (the
	// API server's pod proxy).
	Proxy kube.AdminGetter
	// Lookup asks one DNS server for name's records of type typ (A, AAAA,
	// CNAME); nil asks over the network.
	Lookup func(ctx context.Context, server, name, typ string) ([]string, error)
	// Nameservers finds the authoritative servers of a zone (host:port);
	// nil asks the system resolver for its NS records.
	Nameservers func(ctx context.Context, zone string) ([]string, error)
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
	// issuer is the ACME issuer configuration, once acme() read it.
	issuer *issuerconfig.Config
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
	r.podCertificates(ctx)
	r.acme(ctx)
	r.externalCerts(ctx)
	r.uninjected(ctx)
	r.plaintext(ctx)
	r.appFiles(ctx)
	r.dnsRecords(ctx)
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

// plural is "1 pod", "2 pods".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
