// Package status collects, per pod, what podtls did and why: the injection
// decision with its reason codes, the mesh identity, listeners, allowed
// callers, the external certificate's state from its Secret, recent podtls
// Events and, when asked, the certificates the sidecar serves right now
// (its admin /certs endpoint through the API server's pod proxy).
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	acmestatus "github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/cli/injectconfig"
	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/sidecar/exposure"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
	"github.com/podtls/podtls/webhook/inject"
)

// SchemaVersion identifies the JSON layout of Report.
const SchemaVersion = "podtls.io/status/v1"

// Report is the JSON output of `podtls status`.
type Report struct {
	Schema string `json:"schema"`
	Pods   []Pod  `json:"pods"`
	// Workloads are the machines outside Kubernetes registered in the
	// namespace(s) (podtls workload register).
	Workloads []Workload `json:"workloads,omitempty"`
}

// Pod is the podtls view of one pod.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Phase     string `json:"phase"`
	// Injected: the pod has the sidecar. Missing: it should, but does not.
	Injected bool `json:"injected"`
	Missing  bool `json:"missing"`
	// Reasons are the webhook's decision codes (for an injected pod: why it was injected).
	Reasons     []string `json:"reasons"`
	SidecarMode string   `json:"sidecarMode,omitempty"`
	Version     string   `json:"controllerVersion,omitempty"`
	Identity    string   `json:"identity,omitempty"`
	// IdentitySource is where an injected sidecar's certificate comes from:
	// "agent", "podCertificate" (the kubelet and podtls's signer) or
	// "files" (a cert dir nobody renews).
	IdentitySource string   `json:"identitySource,omitempty"`
	DNSNames       []string `json:"dnsNames,omitempty"`
	Inbound        []string `json:"inbound,omitempty"`
	Upstreams      []string `json:"upstreams,omitempty"`
	// Allow is empty when any identity of the trust domain may call.
	Allow    []string  `json:"allow,omitempty"`
	External *External `json:"external,omitempty"`
	// AppFiles is where the app's own certificate files go (podtls.io/app-certs).
	AppFiles *contract.AppCertSpec `json:"appFiles,omitempty"`
	Live     *Live                 `json:"live,omitempty"`
	Events   []Event               `json:"events,omitempty"`
	// Problems found while reading the pod's podtls annotations.
	Problems []string `json:"problems,omitempty"`
}

// External is the external certificate of a pod, from its Secret.
type External struct {
	Hosts  []string `json:"hosts"`
	Secret string   `json:"secret"`
	// Found is false while the ACME manager has not created the Secret.
	Found  bool                 `json:"found"`
	Status *acmestatus.External `json:"status,omitempty"`
	// Records are the DNS records of the Services that select the pod and
	// ask for them (podtls.io/dns-records).
	Records []Records `json:"records,omitempty"`
}

// Live is what the sidecar serves right now.
type Live struct {
	Ready    bool             `json:"ready"`
	Mesh     *certs.CertInfo  `json:"mesh,omitempty"`
	External []certs.CertInfo `json:"external,omitempty"`
	Error    string           `json:"error,omitempty"`
	// Plaintext is the sidecar's plaintext-bypass check (its /plaintext);
	// PlaintextError says why it could not be read.
	Plaintext      *exposure.Report `json:"plaintext,omitempty"`
	PlaintextError string           `json:"plaintextError,omitempty"`
	// AppFiles is the state of each app-owned certificate directory (the
	// sidecar's /app-certs).
	AppFiles []AppFiles `json:"appFiles,omitempty"`
}

// AppFiles is one source directory of app-owned certificate files.
type AppFiles struct {
	Source     string    `json:"source"`
	Written    bool      `json:"written"`
	Serial     string    `json:"serial,omitempty"`
	WrittenAt  time.Time `json:"written_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	LastReload string    `json:"last_reload,omitempty"`
}

// Event is a podtls Event on the pod.
type Event struct {
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Count   int32     `json:"count"`
	Last    time.Time `json:"last"`
}

// Options say which pods and how much.
type Options struct {
	Namespace           string // "" with AllNamespaces false is an error
	AllNamespaces       bool
	Pod                 string // one pod, or all of the namespace
	ControllerNamespace string
	Live                bool
	// Proxy reads a path of the sidecar's admin endpoint (/certs,
	// /plaintext). Nil is kube.AdminGet: the API server's pod proxy.
	Proxy kube.AdminGetter
}

// eventReasons are the Event reasons podtls records on pods.
var eventReasons = []string{contract.EventNotInjected, acmestatus.EventIssued, acmestatus.EventRenewed,
	acmestatus.EventFailed, acmestatus.EventDenied, acmestatus.EventNotConfigured, acmestatus.EventIgnored,
	eventsapi.ReasonAppCertsWriteFailed, eventsapi.ReasonAppReloaded, eventsapi.ReasonAppReloadFailed, eventsapi.ReasonPlaintextExposed}

// Collect reads the pods and everything about them.
func Collect(ctx context.Context, kc kubernetes.Interface, opts Options) (Report, error) {
	rep := Report{Schema: SchemaVersion, Pods: []Pod{}}
	ns := opts.Namespace
	if opts.AllNamespaces {
		ns = ""
	}
	var pods []corev1.Pod
	if opts.Pod != "" {
		p, err := kc.CoreV1().Pods(ns).Get(ctx, opts.Pod, metav1.GetOptions{})
		if err != nil {
			return rep, fmt.Errorf("get pod %s/%s: %w", ns, opts.Pod, err)
		}
		pods = []corev1.Pod{*p}
	} else {
		l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return rep, fmt.Errorf("list pods: %w", err)
		}
		pods = l.Items
	}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Namespace != pods[j].Namespace {
			return pods[i].Namespace < pods[j].Namespace
		}
		return pods[i].Name < pods[j].Name
	})

	ctrl := options.DefaultOptions()
	ctrl.Namespace = opts.ControllerNamespace
	if o, _, err := injectconfig.FromDeployment(ctx, kc, opts.ControllerNamespace); err == nil {
		ctrl = o
	}
	cfg, err := injectconfig.DecideConfig(ctrl)
	if err != nil {
		return rep, err
	}
	namespaces := map[string]*corev1.Namespace{}
	events := map[string][]Event{}
	services := map[string][]corev1.Service{}
	for _, p := range pods {
		if _, seen := namespaces[p.Namespace]; seen {
			continue
		}
		n, err := kc.CoreV1().Namespaces().Get(ctx, p.Namespace, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
			return rep, fmt.Errorf("get namespace %s: %w", p.Namespace, err)
		}
		if err != nil {
			n = nil
		}
		namespaces[p.Namespace] = n
		if svcs, err := kc.CoreV1().Services(p.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
			services[p.Namespace] = svcs.Items
		}
		evs, err := podEvents(ctx, kc, p.Namespace, opts.Pod)
		if err != nil {
			return rep, err
		}
		for k, v := range evs {
			events[k] = v
		}
	}
	for i := range pods {
		p := &pods[i]
		st := describe(p, namespaces[p.Namespace], cfg)
		st.Events = events[p.Namespace+"/"+p.Name]
		if st.External != nil {
			sec, err := kc.CoreV1().Secrets(p.Namespace).Get(ctx, st.External.Secret, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				st.Problems = append(st.Problems, fmt.Sprintf("read Secret %s: %v", st.External.Secret, err))
			default:
				st.External.Found = true
				e, err := acmestatus.Decode(sec.Annotations)
				if err != nil {
					st.Problems = append(st.Problems, err.Error())
				}
				st.External.Status = &e
			}
			st.External.Records = recordsOf(p, services[p.Namespace])
		}
		if opts.Live && st.Injected {
			st.Live = live(ctx, kc, opts.Proxy, p)
		}
		rep.Pods = append(rep.Pods, st)
	}
	if opts.Pod == "" {
		ns := opts.Namespace
		if opts.AllNamespaces {
			ns = ""
		}
		if ws, err := Workloads(ctx, kc, ns); err == nil {
			rep.Workloads = ws
		}
	}
	return rep, nil
}

// describe is the pure part: what the pod spec and annotations say.
func describe(p *corev1.Pod, ns *corev1.Namespace, cfg inject.Config) Pod {
	st := Pod{Namespace: p.Namespace, Name: p.Name, Phase: string(p.Status.Phase), Injected: inject.HasSidecar(p)}
	if st.Phase == "" {
		st.Phase = "Pending"
	}
	subject := p
	if st.Injected {
		// Why it was injected: the decision on the pod as it was submitted.
		orig, err := inject.Uninject(p)
		if err != nil {
			st.Problems = append(st.Problems, err.Error())
		} else {
			subject = orig
		}
		var s inject.Status
		if err := json.Unmarshal([]byte(p.Annotations[contract.Status]), &s); err == nil {
			st.SidecarMode, st.Version = string(s.Mode), s.Version
		}
		if td := sidecarArg(p, "--trust-domain"); td != "" {
			cfg.TrustDomain = td
		}
		st.IdentitySource = IdentitySource(p)
	}
	d := inject.Decide(subject, ns, cfg)
	for _, r := range d.Reasons {
		st.Reasons = append(st.Reasons, string(r))
	}
	if st.Injected && d.Has(inject.ReasonAlreadyInjected) {
		st.Reasons = []string{string(inject.ReasonAlreadyInjected)} // added by hand, not by the webhook
	}
	st.Missing = !st.Injected && d.Inject && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
	if !st.Injected && !d.Inject {
		return st
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if id, err := identity.New(cfg.TrustDomain, p.Namespace, sa); err == nil {
		st.Identity = id.String()
	}
	spec, _, err := inject.Parse(subject, p.Namespace, cfg)
	if err != nil {
		st.Problems = append(st.Problems, err.Error())
		return st
	}
	st.DNSNames = spec.DNSNames
	for _, m := range spec.Inbound {
		st.Inbound = append(st.Inbound, fmt.Sprintf(":%d -> 127.0.0.1:%d", m.Listen, m.Target))
	}
	for _, u := range spec.Upstreams {
		scheme := ""
		if u.Public {
			scheme = contract.PublicScheme
		}
		s := fmt.Sprintf("127.0.0.1:%d -> %s%s:%d", u.LocalPort, scheme, u.Host, u.Port)
		if u.ID != "" {
			s += " (" + u.ID + ")"
		}
		st.Upstreams = append(st.Upstreams, s)
	}
	st.Allow = spec.Allow
	st.AppFiles = spec.AppCerts
	if len(spec.ExternalHosts) > 0 {
		secret := p.Annotations[contract.ExternalSecret]
		if secret == "" {
			secret = spec.ExternalSecret
		}
		st.External = &External{Hosts: spec.ExternalHosts, Secret: secret}
	}
	return st
}

// sidecarArg returns the value of flag in the sidecar's arguments.
// IdentitySource reads an injected pod's identity source from its sidecar's flags.
func IdentitySource(p *corev1.Pod) string {
	switch {
	case sidecarArg(p, "--credential-bundle") != "":
		return contract.IdentityPodCertificate
	case sidecarArg(p, "--ca-url") != "":
		return contract.IdentityAgent
	}
	return "files"
}

func sidecarArg(p *corev1.Pod, flag string) string {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			if c.Name != contract.ContainerName {
				continue
			}
			if i := slices.Index(c.Args, flag); i >= 0 && i+1 < len(c.Args) {
				return c.Args[i+1]
			}
		}
	}
	return ""
}

// podEvents returns podtls Events by "namespace/pod".
func podEvents(ctx context.Context, kc kubernetes.Interface, ns, pod string) (map[string][]Event, error) {
	sel := fields.Set{"involvedObject.kind": "Pod"}
	if pod != "" {
		sel["involvedObject.name"] = pod
	}
	l, err := kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel.AsSelector().String()})
	if apierrors.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list events in %s: %w", ns, err)
	}
	out := map[string][]Event{}
	for _, e := range l.Items {
		if !slices.Contains(eventReasons, e.Reason) && e.Source.Component != "podtls-controller" && e.ReportingController != "podtls-controller" {
			continue
		}
		last := e.LastTimestamp.Time
		if last.IsZero() {
			last = e.EventTime.Time
		}
		if last.IsZero() {
			last = e.CreationTimestamp.Time
		}
		count := e.Count
		if count == 0 {
			count = 1
		}
		key := e.InvolvedObject.Namespace + "/" + e.InvolvedObject.Name
		out[key] = append(out[key], Event{Type: e.Type, Reason: e.Reason, Message: e.Message, Count: count, Last: last})
	}
	for k := range out {
		evs := out[k]
		sort.Slice(evs, func(i, j int) bool { return evs[i].Last.After(evs[j].Last) })
		if len(evs) > 5 {
			out[k] = evs[:5]
		}
	}
	return out, nil
}

// live reads the sidecar's /certs and /plaintext through the API server's pod proxy.
func live(ctx context.Context, kc kubernetes.Interface, proxy kube.AdminGetter, p *corev1.Pod) *Live {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return &Live{Error: "pod is not running"}
	}
	if proxy == nil {
		proxy = kube.AdminGet(kc)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := proxy(ctx, p.Namespace, p.Name, "certs")
	if err != nil {
		return &Live{Error: fmt.Sprintf("read /certs through the pod proxy: %v", trim(err.Error()))}
	}
	var snap certs.Snapshot
	if err := json.Unmarshal(body, &snap); err != nil {
		return &Live{Error: fmt.Sprintf("decode /certs: %v", err)}
	}
	l := &Live{Ready: snap.Ready, Mesh: snap.Mesh, External: snap.External}
	l.Plaintext, err = ReadPlaintext(ctx, proxy, p.Namespace, p.Name)
	if err != nil {
		l.PlaintextError = err.Error()
	}
	if _, files := p.Annotations[contract.AppCerts]; files {
		l.AppFiles, _ = ReadAppFiles(ctx, proxy, p.Namespace, p.Name) // unreadable shows as no state
	}
	return l
}

// ReadPlaintext reads a sidecar's plaintext-bypass report. A sidecar that
// predates the check answers 404, reported as such.
func ReadPlaintext(ctx context.Context, proxy kube.AdminGetter, ns, pod string) (*exposure.Report, error) {
	body, err := proxy(ctx, ns, pod, "plaintext")
	if apierrors.IsNotFound(err) {
		return nil, errors.New("the sidecar does not report it (an older version: recreate the pod to update it)")
	}
	if err != nil {
		return nil, fmt.Errorf("read /plaintext through the pod proxy: %s", trim(err.Error()))
	}
	var r exposure.Report
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode /plaintext: %w", err)
	}
	return &r, nil
}

// ReadAppFiles reads a sidecar's app-owned certificate directories (its
// /app-certs).
func ReadAppFiles(ctx context.Context, proxy kube.AdminGetter, ns, pod string) ([]AppFiles, error) {
	body, err := proxy(ctx, ns, pod, "app-certs")
	if err != nil {
		return nil, fmt.Errorf("read /app-certs through the pod proxy: %w", err)
	}
	var files []AppFiles
	if err := json.Unmarshal(body, &files); err != nil {
		return nil, fmt.Errorf("decode /app-certs: %w", err)
	}
	return files, nil
}

func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
