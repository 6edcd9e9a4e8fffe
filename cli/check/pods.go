package check

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/cli/injectconfig"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/webhook/inject"
)

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
