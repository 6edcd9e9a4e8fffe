package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/injectconfig"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/controller/options"
)

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
