package check

import (
	"context"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
)

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
	r.issuer = &c

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
