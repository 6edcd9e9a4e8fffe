package inject

import (
	"errors"
	"fmt"
	"math"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/podtls/podtls/contract"
)

// Bounds of the sidecar's CPU limit: below MinCPULimit an mTLS handshake
// (~0.4 ms of CPU) takes most of a CFS period; below WarnCPULimit throttling
// adds latency to ordinary traffic.
var (
	MinCPULimit  = resource.MustParse("10m")
	WarnCPULimit = resource.MustParse("100m")
)

// GoMemLimitPercent of the memory limit is the sidecar's GOMEMLIMIT: the Go
// runtime collects harder as the heap nears it instead of growing into the
// container's limit.
const GoMemLimitPercent = 90

// Resources are the sidecar's effective resources for one pod.
type Resources struct {
	Requirements corev1.ResourceRequirements
	// MaxConnections is rendered as --max-connections; 0 when there is no
	// memory limit to follow and no annotation (the sidecar's own default).
	MaxConnections int
	// GoMemLimit is GOMEMLIMIT in bytes; 0 without a memory limit.
	GoMemLimit int64
}

// EffectiveResources resolves the sidecar's resources: the template's
// defaults overridden by the pod's annotations, checked together (a request
// above its limit, limits too small to work, a connection limit the memory
// cannot hold are errors; risky but workable settings are warnings). Parse
// calls it at admission; Inject again to render.
func EffectiveResources(spec contract.Spec, tmpl corev1.ResourceRequirements) (Resources, []string, error) {
	r := Resources{Requirements: *tmpl.DeepCopy()}
	if r.Requirements.Requests == nil {
		r.Requirements.Requests = corev1.ResourceList{}
	}
	if r.Requirements.Limits == nil {
		r.Requirements.Limits = corev1.ResourceList{}
	}
	var errs, warns []string
	fromPod := map[string]bool{}
	for _, o := range []struct {
		key   string
		value string
		list  corev1.ResourceList
		name  corev1.ResourceName
	}{
		{contract.SidecarCPURequest, spec.Resources.CPURequest, r.Requirements.Requests, corev1.ResourceCPU},
		{contract.SidecarCPULimit, spec.Resources.CPULimit, r.Requirements.Limits, corev1.ResourceCPU},
		{contract.SidecarMemoryRequest, spec.Resources.MemoryRequest, r.Requirements.Requests, corev1.ResourceMemory},
		{contract.SidecarMemoryLimit, spec.Resources.MemoryLimit, r.Requirements.Limits, corev1.ResourceMemory},
	} {
		if o.value == "" {
			continue
		}
		q, err := resource.ParseQuantity(o.value)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("annotation %s: %q is not a quantity; want e.g. %s", o.key, o.value, example(o.name)))
			continue
		case q.Sign() < 0:
			errs = append(errs, fmt.Sprintf("annotation %s: %q is negative; want e.g. %s", o.key, o.value, example(o.name)))
			continue
		case q.Cmp(maxQuantity[o.name]) > 0:
			// Beyond this, Value (bytes) or MilliValue (millicores)
			// no longer fits an int64 and the arithmetic below wraps.
			max := maxQuantity[o.name]
			errs = append(errs, fmt.Sprintf("annotation %s: %q is too large; want at most %s", o.key, o.value, max.String()))
			continue
		}
		o.list[o.name] = q
		fromPod[o.key] = true
	}
	if len(errs) > 0 {
		return Resources{}, nil, errors.New(strings.Join(errs, "; "))
	}
	source := func(key string) string {
		if fromPod[key] {
			return "annotation " + key
		}
		return "the controller's default; override with annotation " + key
	}
	for _, p := range []struct {
		name       corev1.ResourceName
		reqKey     string
		limKey     string
		minLimit   resource.Quantity
		minLimitOf string
	}{
		{corev1.ResourceCPU, contract.SidecarCPURequest, contract.SidecarCPULimit, MinCPULimit, "an mTLS handshake costs ~0.4 ms of CPU"},
		{corev1.ResourceMemory, contract.SidecarMemoryRequest, contract.SidecarMemoryLimit,
			*resource.NewQuantity(contract.MinMemoryLimit, resource.BinarySI), "the sidecar starts at ~9.5 MB and needs room for TLS handshakes"},
	} {
		req, hasReq := r.Requirements.Requests[p.name]
		lim, hasLim := r.Requirements.Limits[p.name]
		if !hasLim {
			continue
		}
		if lim.Cmp(p.minLimit) < 0 {
			errs = append(errs, fmt.Sprintf("sidecar %s limit %s (%s) is below %s; want at least %s: %s",
				p.name, lim.String(), source(p.limKey), p.minLimit.String(), p.minLimit.String(), p.minLimitOf))
		}
		if hasReq && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Sprintf("sidecar %s request %s (%s) is above its limit %s (%s); want a request at most the limit",
				p.name, req.String(), source(p.reqKey), lim.String(), source(p.limKey)))
		}
	}
	if len(errs) > 0 {
		return Resources{}, nil, errors.New(strings.Join(errs, "; "))
	}
	if lim, ok := r.Requirements.Limits[corev1.ResourceCPU]; ok && lim.Cmp(WarnCPULimit) < 0 {
		warns = append(warns, fmt.Sprintf("sidecar cpu limit %s (%s) is below %s: CFS throttling adds latency to every call through the sidecar",
			lim.String(), source(contract.SidecarCPULimit), WarnCPULimit.String()))
	}
	r.MaxConnections = spec.MaxConnections
	mem, ok := r.Requirements.Limits[corev1.ResourceMemory]
	if !ok {
		return r, warns, nil
	}
	limit := mem.Value()
	r.GoMemLimit = limit / 100 * GoMemLimitPercent
	model := contract.MaxConnectionsFor(limit)
	switch n := spec.MaxConnections; {
	case n == 0:
		r.MaxConnections = model
	case n > contract.IdleConnectionsFor(limit):
		return Resources{}, nil, fmt.Errorf("annotation %s: %d connections do not fit the sidecar's memory limit %s (%s) even idle (%d do); want at most %d, or a memory limit of at least %s",
			contract.MaxConnections, n, mem.String(), source(contract.SidecarMemoryLimit), contract.IdleConnectionsFor(limit), model, memoryFor(n))
	case n > model:
		warns = append(warns, fmt.Sprintf("annotation %s: %d connections exceed the %d the memory limit %s holds under load; if they all transfer at once the sidecar may be OOM-killed: raise %s to %s",
			contract.MaxConnections, n, model, mem.String(), contract.SidecarMemoryLimit, memoryFor(n)))
	}
	return r, warns, nil
}

// maxQuantity is the largest quantity of each resource whose value, in the
// unit the kubelet and this package compute with, fits an int64.
var maxQuantity = map[corev1.ResourceName]resource.Quantity{
	corev1.ResourceCPU:    *resource.NewMilliQuantity(math.MaxInt64, resource.DecimalSI),
	corev1.ResourceMemory: *resource.NewQuantity(math.MaxInt64, resource.BinarySI),
}

// memoryFor is the smallest memory limit, in whole MiB, whose default
// connection limit is at least n: the inverse of contract.MaxConnectionsFor.
func memoryFor(n int) string {
	need := (contract.ConnBaseBytes + int64(n)*contract.ConnActiveBytes) * 100 / contract.MemoryHeadroomPercent
	mib := (need + 1<<20 - 1) >> 20
	for contract.MaxConnectionsFor(mib<<20) < n {
		mib++
	}
	return fmt.Sprintf("%dMi", mib)
}

func example(name corev1.ResourceName) string {
	if name == corev1.ResourceCPU {
		return `"100m" or "1"`
	}
	return `"128Mi"`
}
