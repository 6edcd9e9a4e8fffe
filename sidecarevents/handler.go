// Package sidecarevents records as Kubernetes Events on a pod what its
// sidecar reports (eventsapi): the sidecar runs with the workload's service
// account, which podtls grants no Event rights, so it asks the controller,
// authenticated by its mesh certificate. The controller checks that the pod
// runs under that identity, allows only the reasons of eventsapi, and
// limits each pod's rate.
package sidecarevents

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
	"github.com/podtls/podtls/tlsconfig"
)

// Options configure a Handler.
type Options struct {
	// Pods reads pods (the manager's cache). Required.
	Pods client.Reader
	// Recorder writes the Events. Required.
	Recorder record.EventRecorder
	// TrustDomain of the callers and TrustPool the CA's current roots. Required.
	TrustDomain string
	TrustPool   func() *x509.CertPool
	// Rate and Burst per pod: 1 every 5 s, burst 10, if zero.
	Rate  rate.Limit
	Burst int
	// Logger; slog.Default() if nil. Metrics, if set, gets the request counter.
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// Handler serves POST eventsapi.Path.
type Handler struct {
	o        Options
	allow    *identity.Matcher
	log      *slog.Logger
	requests *prometheus.CounterVec

	mu     sync.Mutex
	limits map[types.NamespacedName]*rate.Limiter
	lastGC time.Time
}

// New validates o.
func New(o Options) (*Handler, error) {
	if o.Pods == nil || o.Recorder == nil || o.TrustPool == nil {
		return nil, errors.New("sidecar events: Pods, Recorder and TrustPool are required")
	}
	allow, err := identity.NewMatcher(o.TrustDomain, nil)
	if err != nil {
		return nil, fmt.Errorf("sidecar events: trust domain: %w", err)
	}
	if o.Rate == 0 {
		o.Rate, o.Burst = rate.Every(5*time.Second), 10
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{o: o, allow: allow, log: o.Logger.With("component", "sidecar-events"), limits: map[types.NamespacedName]*rate.Limiter{}}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podtls_sidecar_events_total",
		Help: "Events sidecars reported about their pods, by result (recorded, refused, rate_limited, error).",
	}, []string{"result"})
	if o.Metrics != nil {
		if err := o.Metrics.Register(h.requests); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			h.requests = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code, msg := h.serve(r)
	result := map[int]string{http.StatusAccepted: "recorded", http.StatusTooManyRequests: "rate_limited", http.StatusInternalServerError: "error"}[code]
	if result == "" {
		result = "refused"
	}
	h.requests.WithLabelValues(result).Inc()
	if code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

func (h *Handler) serve(r *http.Request) (int, string) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "use POST"
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return http.StatusUnauthorized, "a mesh client certificate is required"
	}
	chain := r.TLS.PeerCertificates
	if err := tlsconfig.VerifyClient(h.o.TrustPool(), h.allow, chain, h.o.Now()); err != nil {
		return http.StatusUnauthorized, "client certificate: " + err.Error()
	}
	raw, err := tlsconfig.SPIFFEID(chain[0])
	if err != nil {
		return http.StatusUnauthorized, "client certificate: " + err.Error()
	}
	id, err := identity.Parse(raw)
	if err != nil {
		return http.StatusUnauthorized, "client certificate: " + err.Error()
	}
	var req eventsapi.Request
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, eventsapi.MaxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return http.StatusBadRequest, "decode request: " + err.Error()
	}
	warning, known := eventsapi.Warning(req.Reason)
	if !known {
		return http.StatusBadRequest, fmt.Sprintf("reason %q is not one a sidecar may report", req.Reason)
	}
	key := types.NamespacedName{Namespace: id.Namespace, Name: req.Pod}
	pod := &corev1.Pod{}
	if err := h.o.Pods.Get(r.Context(), key, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return http.StatusForbidden, fmt.Sprintf("no pod %s in namespace %s", req.Pod, id.Namespace)
		}
		return http.StatusInternalServerError, "read pod: " + err.Error()
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if sa != id.ServiceAccount {
		return http.StatusForbidden, fmt.Sprintf("pod %s does not run as %s", key, id)
	}
	if !h.allowNow(key) {
		return http.StatusTooManyRequests, "too many events from this pod"
	}
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	h.o.Recorder.Event(pod, typ, req.Reason, clean(req.Message))
	h.log.Debug("event recorded for a sidecar", "pod", key.String(), "reason", req.Reason)
	return http.StatusAccepted, "recorded"
}

// allowNow takes a token of the pod's bucket; buckets of pods quiet for an
// hour are dropped.
func (h *Handler) allowNow(key types.NamespacedName) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.o.Now()
	if now.Sub(h.lastGC) > time.Hour {
		for k, l := range h.limits {
			if l.TokensAt(now) >= float64(h.o.Burst) {
				delete(h.limits, k)
			}
		}
		h.lastGC = now
	}
	l := h.limits[key]
	if l == nil {
		l = rate.NewLimiter(h.o.Rate, h.o.Burst)
		h.limits[key] = l
	}
	return l.AllowN(now, 1)
}

// clean keeps a message printable and short.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > eventsapi.MaxMessageBytes {
		s = strings.ToValidUTF8(s[:eventsapi.MaxMessageBytes], "") + "..."
	}
	return strings.TrimSpace(s)
}
