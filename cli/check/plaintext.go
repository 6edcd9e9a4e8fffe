package check

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/cli/status"
	"github.com/podtls/podtls/webhook/inject"
)

// plaintextWorkers bounds the sidecars read at once through the API server.
const plaintextWorkers = 8

// plaintext reads every running sidecar's plaintext-bypass report: an app
// port reachable on the pod IP is a failure (mTLS and the allow list are
// bypassed); a sidecar that cannot tell is a warning, never a false ok.
func (r *runner) plaintext(ctx context.Context) {
	targets, ok := r.runningSidecars(ctx, IDPlaintextBypass)
	if !ok {
		return
	}
	type result struct {
		exposed, unknown []string
		forbidden        bool
	}
	results := make([]result, len(targets))
	r.eachPod(ctx, targets, func(ctx context.Context, i int, get kube.AdminGetter) {
		p := targets[i]
		name := p.Namespace + "/" + p.Name
		rep, err := status.ReadPlaintext(ctx, get, p.Namespace, p.Name)
		res := &results[i]
		switch {
		case apierrors.IsForbidden(err):
			res.forbidden = true
		case err != nil:
			res.unknown = append(res.unknown, name+": "+err.Error())
		case !rep.Enabled:
			res.unknown = append(res.unknown, name+": not checked: "+rep.Reason)
		case rep.CheckedAt.IsZero():
			res.unknown = append(res.unknown, name+": not checked yet")
		default:
			for _, e := range rep.Exposed() {
				res.exposed = append(res.exposed, fmt.Sprintf("%s: port %d at %s: %s", name, e.Port, strings.Join(e.Addresses, ", "), e.Fix))
			}
		}
	})
	var exposed, unknown []string
	forbidden := false
	for _, res := range results {
		exposed, unknown = append(exposed, res.exposed...), append(unknown, res.unknown...)
		forbidden = forbidden || res.forbidden
	}
	switch {
	case len(exposed) > 0:
		r.add(IDPlaintextBypass, output.Fail, fmt.Sprintf("%s reachable in plaintext on the pod IP, bypassing mTLS and the allow list", plural(len(exposed), "app port")),
			"bind each app to 127.0.0.1:PORT (or [::1]:PORT) instead of 0.0.0.0:PORT; the sidecar still reaches it on loopback", exposed...)
	case forbidden:
		r.add(IDPlaintextBypass, output.Warn, "cannot read the sidecars' /plaintext: pods/proxy forbidden",
			"ask for get on pods/proxy, or run as a cluster admin")
	case len(unknown) > 0:
		r.add(IDPlaintextBypass, output.Warn, fmt.Sprintf("%s could not tell whether their app ports are exposed", plural(len(unknown), "sidecar")),
			"the objects say why; an older sidecar is updated by recreating its pod", unknown...)
	default:
		r.add(IDPlaintextBypass, output.OK, fmt.Sprintf("no app port reachable in plaintext on the pod IP (%s checked)", plural(len(targets), "running sidecar")), "")
	}
}

// runningSidecars lists the running pods with a sidecar; false when the
// pods cannot be read (reported under id).
func (r *runner) runningSidecars(ctx context.Context, id string) ([]*corev1.Pod, bool) {
	pods, err := r.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		r.readErr(id, "pods", err)
		return nil, false
	}
	var targets []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && inject.HasSidecar(p) {
			targets = append(targets, p)
		}
	}
	return targets, true
}

// eachPod runs fn for every pod, plaintextWorkers at a time, each with a
// 5 s deadline and the admin-endpoint reader.
func (r *runner) eachPod(ctx context.Context, pods []*corev1.Pod, fn func(ctx context.Context, i int, get kube.AdminGetter)) {
	get := r.opts.Proxy
	if get == nil {
		get = kube.AdminGet(r.kube)
	}
	sem := make(chan struct{}, plaintextWorkers)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			fn(pctx, i, get)
		}()
	}
	wg.Wait()
}
