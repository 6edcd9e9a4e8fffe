// Package webhook is the admission handler that injects the podtls sidecar. It
// decodes the pod, asks webhook/inject to decide and mutate, and lets
// controller-runtime compute the JSON patch (admission.PatchResponseFromRaw). It
// is an admission.Handler rather than an admission.CustomDefaulter because the
// v0.22 CustomDefaulter cannot return admission warnings, which users need for
// valid-but-suspicious annotations. It makes no API calls: namespace labels come
// from an informer-backed reader.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

// Results of an admission, the "result" label of the admissions metric.
const (
	ResultInjected = "injected"
	ResultSkipped  = "skipped"
	ResultDenied   = "denied"
	ResultError    = "error"
)

// ConfigSource holds the current injection config; the controller swaps it when
// the trust roots change. Safe for concurrent use.
type ConfigSource struct{ p atomic.Pointer[inject.Config] }

// NewConfigSource returns a source holding cfg.
func NewConfigSource(cfg inject.Config) *ConfigSource {
	s := &ConfigSource{}
	s.Store(cfg)
	return s
}

// Load returns the current config.
func (s *ConfigSource) Load() inject.Config { return *s.p.Load() }

// Store replaces the config.
func (s *ConfigSource) Store(cfg inject.Config) { s.p.Store(&cfg) }

// Handler is the pod admission handler.
type Handler struct {
	// Namespaces reads Namespace objects, from an informer cache in production.
	Namespaces client.Reader
	// Config is the injection configuration.
	Config *ConfigSource
	// Secrets reads the metadata of the Secret a pod names in
	// podtls.io/app-cert-password (a live GET, only for such pods); nil
	// skips the check.
	Secrets client.Reader
	// FallbackLabels stand in for the namespace's labels when it is not in the
	// cache yet (a namespace created a moment ago). The labelled webhook only
	// sees namespaces labelled enabled, so it passes that label here.
	FallbackLabels map[string]string
}

var _ admission.Handler = (*Handler)(nil)

// Handle implements admission.Handler. It never panics: a panic becomes an
// Errored response (and failurePolicy decides what the API server does).
func (h *Handler) Handle(ctx context.Context, req admission.Request) (resp admission.Response) {
	start := time.Now()
	log := logf.FromContext(ctx).WithValues("namespace", req.Namespace, "uid", req.UID)
	defer func() {
		if r := recover(); r != nil {
			log.Error(fmt.Errorf("%v", r), "panic in pod admission")
			observe(ResultError, []inject.ReasonCode{"panic"}, start)
			resp = admission.Errored(http.StatusInternalServerError, fmt.Errorf("podtls: internal error"))
		}
	}()

	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return admission.Allowed("")
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		observe(ResultError, []inject.ReasonCode{"decode"}, start)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("podtls: decode pod: %w", err))
	}
	// The request's namespace is authoritative; the object may not carry it.
	ns := h.namespace(ctx, req.Namespace)
	cfg := h.Config.Load()
	// Most pods the opt-in webhook sees are not for us: answer before encoding anything.
	if d := inject.Decide(&pod, ns, cfg); d.Final() {
		log.V(1).Info("pod not injected", "pod", podName(&pod), "reasons", d.Reasons)
		observe(ResultSkipped, d.Reasons, start)
		return admission.Allowed("").WithWarnings(d.Warnings...)
	}

	original, err := json.Marshal(&pod)
	if err != nil {
		observe(ResultError, []inject.ReasonCode{"encode"}, start)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("podtls: encode pod: %w", err))
	}
	res, err := inject.Mutate(&pod, ns, cfg)
	log = log.WithValues("pod", podName(&pod), "inject", res.Decision.Inject, "reasons", res.Decision.Reasons)
	switch {
	case err != nil:
		log.V(1).Info("pod denied", "error", err.Error())
		observe(ResultDenied, res.Decision.Reasons, start)
		return admission.Denied(err.Error()).WithWarnings(res.Warnings...)
	case !res.Mutated:
		log.V(1).Info("pod not injected")
		observe(ResultSkipped, res.Decision.Reasons, start)
		return admission.Allowed("").WithWarnings(res.Warnings...)
	}
	if msg, warn := h.checkPasswordSecret(ctx, req.Namespace, &pod); msg != "" {
		log.V(1).Info("pod denied", "error", msg)
		observe(ResultDenied, []inject.ReasonCode{inject.ReasonInvalidAnnotations}, start)
		return admission.Denied(msg).WithWarnings(res.Warnings...)
	} else if warn != "" {
		res.Warnings = append(res.Warnings, warn)
	}
	mutated, err := json.Marshal(&pod)
	var from, to []byte
	if err == nil {
		// Keep what our types do not know, so the patch only adds podtls's parts.
		from, to, err = patchPair(req.Object.Raw, original, mutated)
	}
	if err != nil {
		observe(ResultError, []inject.ReasonCode{"encode"}, start)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("podtls: encode pod: %w", err))
	}
	resp = admission.PatchResponseFromRaw(from, to).WithWarnings(res.Warnings...)
	log.V(1).Info("pod injected", "operations", len(resp.Patches))
	observe(ResultInjected, res.Decision.Reasons, start)
	return resp
}

// checkPasswordSecret refuses a pod whose app-cert password Secret does not
// exist (the pod would never start); a Secret it cannot look up (no RBAC,
// API trouble) is only a warning. It reads metadata, never the password.
func (h *Handler) checkPasswordSecret(ctx context.Context, ns string, pod *corev1.Pod) (deny, warn string) {
	v, ok := pod.Annotations[contract.AppCertPassword]
	if !ok || h.Secrets == nil {
		return "", ""
	}
	name, key := contract.PasswordRef(v)
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := h.Secrets.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, m)
	switch {
	case err == nil:
		return "", ""
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("podtls: annotation %s: Secret %s/%s does not exist; create it with the stores' password under key %q first",
			contract.AppCertPassword, ns, name, key), ""
	case apierrors.IsForbidden(err):
		return "", fmt.Sprintf("podtls: cannot check that Secret %s/%s of %s exists (the controller may not read Secrets: chart value appCertificates.checkPasswordSecrets); if it is missing, the pod waits for it",
			ns, name, contract.AppCertPassword)
	}
	return "", fmt.Sprintf("podtls: could not check that Secret %s/%s of %s exists (%v); the pod waits for it if it does not",
		ns, name, contract.AppCertPassword, err)
}

// namespace returns the namespace from the cache, or a stand-in built from the
// fallback labels when it is not there.
func (h *Handler) namespace(ctx context.Context, name string) *corev1.Namespace {
	ns := &corev1.Namespace{}
	if h.Namespaces != nil {
		err := h.Namespaces.Get(ctx, types.NamespacedName{Name: name}, ns)
		if err == nil {
			return ns
		}
		logf.FromContext(ctx).V(1).Info("namespace not in cache, using fallback labels", "namespace", name, "error", err.Error())
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: h.FallbackLabels}}
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}
