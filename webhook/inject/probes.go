package inject

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podtls/podtls/contract"
)

// originalProbes are the handlers rewriteProbes replaced, by container name and probe
// kind: the value of the contract.AppProbes annotation.
type originalProbes map[string]map[string]corev1.ProbeHandler

// rewriteProbes points the HTTP, TCP and gRPC probes of the pod's app containers (and
// of its own restartable init containers) at the sidecar's admin port, in place, as
// HTTP GETs of contract.AppHealthPath. It returns what the sidecar must run for each
// path, against the app on loopback, and the handlers it replaced. Periods, thresholds
// and timeouts stay as written. Left alone: exec probes, probes with an explicit host
// (they target another address), and probes whose named port the container does not
// declare (the kubelet fails those itself). A probe of one of the sidecar's inbound TLS
// ports is run against the plaintext app port behind it.
func rewriteProbes(pod *corev1.Pod, spec contract.Spec) (contract.AppProbesConfig, originalProbes) {
	run := contract.AppProbesConfig{}
	orig := originalProbes{}
	rewrite := func(c *corev1.Container) {
		for kind, p := range probesOf(c) {
			if p == nil {
				continue
			}
			ap, ok := appProbe(c, p, spec.Inbound)
			if !ok {
				continue
			}
			path := contract.AppHealthPath(c.Name, kind)
			run[path] = ap
			if orig[c.Name] == nil {
				orig[c.Name] = map[string]corev1.ProbeHandler{}
			}
			orig[c.Name][kind] = undefaulted(p.ProbeHandler)
			p.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(contract.AdminPort), Scheme: corev1.URISchemeHTTP}}
		}
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			rewrite(c)
		}
	}
	for i := range pod.Spec.Containers {
		rewrite(&pod.Spec.Containers[i])
	}
	if len(run) == 0 {
		return nil, nil
	}
	return run, orig
}

// undefaulted is h without the values the API server fills in (HTTP scheme, empty gRPC
// service), so the annotation reads the same whether the pod came through the API
// server (the webhook) or from a file (podtls inject). Restoring it gives back a
// handler the API server defaults to the same one.
func undefaulted(h corev1.ProbeHandler) corev1.ProbeHandler {
	h = *h.DeepCopy()
	if h.HTTPGet != nil && h.HTTPGet.Scheme == corev1.URISchemeHTTP {
		h.HTTPGet.Scheme = ""
	}
	if h.GRPC != nil && h.GRPC.Service != nil && *h.GRPC.Service == "" {
		h.GRPC.Service = nil
	}
	return h
}

// probesOf names c's probes by the kind of their app-health path.
func probesOf(c *corev1.Container) map[string]*corev1.Probe {
	return map[string]*corev1.Probe{
		contract.ProbeLiveness: c.LivenessProbe, contract.ProbeReadiness: c.ReadinessProbe, contract.ProbeStartup: c.StartupProbe,
	}
}

// appProbe is the probe the sidecar runs in place of p, if it can run it.
func appProbe(c *corev1.Container, p *corev1.Probe, inbound []contract.PortMapping) (contract.AppProbe, bool) {
	ap := contract.AppProbe{}
	if p.TimeoutSeconds > 1 { // 0 and 1 are the kubelet's default, 1 s
		ap.TimeoutSeconds = p.TimeoutSeconds
	}
	switch h := p.ProbeHandler; {
	case h.HTTPGet != nil && h.HTTPGet.Host == "":
		port, ok := resolvePort(c, h.HTTPGet.Port)
		if !ok {
			return ap, false
		}
		scheme := string(h.HTTPGet.Scheme)
		if scheme == "" {
			scheme = string(corev1.URISchemeHTTP)
		}
		if target, fronted := behindSidecar(port, inbound); fronted {
			port, scheme = target, string(corev1.URISchemeHTTP)
		}
		get := &contract.HTTPGetProbe{Port: port, Path: h.HTTPGet.Path, Scheme: scheme}
		for _, hd := range h.HTTPGet.HTTPHeaders {
			get.Headers = append(get.Headers, contract.HTTPHeader{Name: hd.Name, Value: hd.Value})
		}
		ap.HTTPGet = get
	case h.TCPSocket != nil && h.TCPSocket.Host == "":
		port, ok := resolvePort(c, h.TCPSocket.Port)
		if !ok {
			return ap, false
		}
		if target, fronted := behindSidecar(port, inbound); fronted {
			port = target
		}
		ap.TCPSocket = &contract.PortProbe{Port: port}
	case h.GRPC != nil:
		port := h.GRPC.Port
		if target, fronted := behindSidecar(port, inbound); fronted {
			port = target
		}
		ap.GRPC = &contract.GRPCProbe{Port: port}
		if h.GRPC.Service != nil {
			ap.GRPC.Service = *h.GRPC.Service
		}
	default:
		return ap, false
	}
	return ap, true
}

// resolvePort turns a probe's port (number or a name among the container's ports) into
// a number.
func resolvePort(c *corev1.Container, port intstr.IntOrString) (int32, bool) {
	if port.Type == intstr.Int {
		return port.IntVal, port.IntVal > 0 && port.IntVal <= 65535
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal && p.Name != "" {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// behindSidecar is the app port an inbound TLS port of the sidecar forwards to.
func behindSidecar(port int32, inbound []contract.PortMapping) (int32, bool) {
	for _, m := range inbound {
		if m.Listen == port {
			return m.Target, true
		}
	}
	return 0, false
}

// restoreProbes undoes rewriteProbes on pod, in place, from the value of the
// contract.AppProbes annotation. Only probes that still point at their app-health path
// are restored.
func restoreProbes(pod *corev1.Pod, annotation string) error {
	var orig originalProbes
	if err := json.Unmarshal([]byte(annotation), &orig); err != nil {
		return fmt.Errorf("annotation %s: %w", contract.AppProbes, err)
	}
	restore := func(c *corev1.Container) {
		for kind, p := range probesOf(c) {
			h, ok := orig[c.Name][kind]
			if !ok || p == nil || p.HTTPGet == nil || p.HTTPGet.Path != contract.AppHealthPath(c.Name, kind) {
				continue
			}
			p.ProbeHandler = h
		}
	}
	for i := range pod.Spec.InitContainers {
		restore(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		restore(&pod.Spec.Containers[i])
	}
	return nil
}
