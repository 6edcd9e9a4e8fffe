package check

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/cli/status"
	"github.com/podtls/podtls/contract"
)

// appFiles reads the app-owned certificate state of every running sidecar
// that writes files (podtls.io/app-certs): a directory the sidecar could
// not write (the app keeps its previous files, which will expire) is a
// failure; files not written yet and failed reloads are warnings.
func (r *runner) appFiles(ctx context.Context) {
	all, ok := r.runningSidecars(ctx, IDAppFiles)
	if !ok {
		return
	}
	var targets []*corev1.Pod
	for _, p := range all {
		if _, on := p.Annotations[contract.AppCerts]; on {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		r.add(IDAppFiles, output.OK, "no running pod asks for app-owned certificate files", "")
		return
	}
	type result struct {
		failed, pending []string
		forbidden       bool
	}
	results := make([]result, len(targets))
	r.eachPod(ctx, targets, func(ctx context.Context, i int, get kube.AdminGetter) {
		p, res := targets[i], &results[i]
		name := p.Namespace + "/" + p.Name
		files, err := status.ReadAppFiles(ctx, get, p.Namespace, p.Name)
		switch {
		case apierrors.IsForbidden(err):
			res.forbidden = true
			return
		case err != nil:
			res.pending = append(res.pending, name+": "+err.Error())
			return
		}
		for _, f := range files {
			switch {
			case f.Error != "":
				res.failed = append(res.failed, fmt.Sprintf("%s: %s: %s", name, f.Source, f.Error))
			case !f.Written && f.Source == contract.AppSourceMesh:
				res.pending = append(res.pending, fmt.Sprintf("%s: %s files not written yet", name, f.Source))
			}
			if action, msg, _ := strings.Cut(f.LastReload, ": "); msg != "" && !strings.HasPrefix(msg, "ok at ") {
				res.pending = append(res.pending, fmt.Sprintf("%s: last %s reload failed: %s", name, action, msg))
			}
		}
	})
	var failed, pending []string
	forbidden := false
	for _, res := range results {
		failed, pending = append(failed, res.failed...), append(pending, res.pending...)
		forbidden = forbidden || res.forbidden
	}
	switch {
	case len(failed) > 0:
		r.add(IDAppFiles, output.Fail, fmt.Sprintf("%s not written: the apps keep their previous certificates until those expire", plural(len(failed), "certificate directory")),
			"the objects say why; the sidecar retries every 10 s", failed...)
	case forbidden:
		r.add(IDAppFiles, output.Warn, "cannot read the sidecars' /app-certs: pods/proxy forbidden", "ask for get on pods/proxy, or run as a cluster admin")
	case len(pending) > 0:
		r.add(IDAppFiles, output.Warn, fmt.Sprintf("%s with app-owned certificate files need attention", plural(len(pending), "sidecar report")), "", pending...)
	default:
		r.add(IDAppFiles, output.OK, fmt.Sprintf("app-owned certificate files current (%s checked)", plural(len(targets), "pod")), "")
	}
}
