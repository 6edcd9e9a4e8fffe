package podcert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/renewal"
)

// Defaults of Signer.
const (
	DefaultPodGrace = 30 * time.Second
	// refreshMargin is the API's rule: beginRefreshAt lies at least 10
	// minutes after notBefore and before notAfter.
	refreshMargin = 10 * time.Minute
)

// Signer answers the PodCertificateRequests of contract.SignerName. It is a
// controller-runtime reconciler, so it runs on the leader only: one replica
// answers each request.
//
// RBAC: get, list, watch podcertificaterequests; update
// podcertificaterequests/status; sign on signers named contract.SignerName;
// get, list, watch pods; create events.
type Signer struct {
	// Client reads requests and pods from the manager's cache and writes
	// status.
	Client client.Client
	// API reads a pod too new for the cache.
	API client.Reader
	// Authority issues the leaves.
	Authority *ca.Authority
	// Recorder records an Event on the pod (the request when there is no
	// pod) for each answer.
	Recorder record.EventRecorder
	// Metrics counts the answers; nil counts nothing.
	Metrics *Metrics
	Log     *slog.Logger
	// Refresh places beginRefreshAt in the leaf's lifetime (default
	// renewal.Mesh), never closer than 10 minutes to either end.
	Refresh renewal.Policy
	// PodGrace is how long a request may name a pod that cannot be found
	// before it is denied (default DefaultPodGrace).
	PodGrace time.Duration
	// Now and Draw default to time.Now and renewal.Draw.
	Now  func() time.Time
	Draw func() float64
}

// SetupWithManager registers the signer for requests of contract.SignerName
// that have no answer yet.
func (s *Signer) SetupWithManager(mgr ctrl.Manager) error {
	if s.Refresh == (renewal.Policy{}) {
		s.Refresh = renewal.Mesh
	}
	if s.PodGrace == 0 {
		s.PodGrace = DefaultPodGrace
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Draw == nil {
		s.Draw = renewal.Draw
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Recorder == nil {
		s.Recorder = mgr.GetEventRecorderFor("podtls-controller")
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		r, ok := o.(*certv1.PodCertificateRequest)
		return ok && r.Spec.SignerName == contract.SignerName && !answered(r)
	})
	return ctrl.NewControllerManagedBy(mgr).Named("podcertificaterequests").
		For(&certv1.PodCertificateRequest{}, builder.WithPredicates(ours)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(s)
}

// answered: the request has its terminal condition (the API then freezes
// its status).
func answered(r *certv1.PodCertificateRequest) bool {
	for _, t := range []string{certv1.PodCertificateRequestConditionTypeIssued,
		certv1.PodCertificateRequestConditionTypeDenied, certv1.PodCertificateRequestConditionTypeFailed} {
		if meta.IsStatusConditionTrue(r.Status.Conditions, t) {
			return true
		}
	}
	return false
}

// Reconcile answers one request: issued, denied or failed.
func (s *Signer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r := &certv1.PodCertificateRequest{}
	if err := s.Client.Get(ctx, req.NamespacedName, r); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.Spec.SignerName != contract.SignerName || answered(r) {
		return ctrl.Result{}, nil
	}
	pod, err := s.pod(ctx, r)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod == nil {
		if wait := r.CreationTimestamp.Add(s.PodGrace).Sub(s.Now()); wait > 0 {
			return ctrl.Result{RequeueAfter: min(wait, 2*time.Second)}, nil
		}
	}
	if refusal := Check(r, pod); refusal != nil {
		return ctrl.Result{}, s.answer(ctx, r, pod, certv1.PodCertificateRequestConditionTypeDenied, *refusal)
	}
	issued, err := s.Authority.SignPodCertificate(ctx, ca.PodRequest{
		Caller:      ca.Caller{Namespace: r.Namespace, ServiceAccount: r.Spec.ServiceAccountName, PodName: pod.Name, PodUID: string(pod.UID)},
		StubCSR:     r.Spec.StubPKCS10Request,
		DNSNames:    contract.SplitList(pod.Annotations[contract.DNSNames]),
		MaxLifetime: maxLifetime(r),
	})
	if err != nil {
		kind, refusal, retry := classify(err)
		if retry {
			return ctrl.Result{}, fmt.Errorf("sign pod certificate %s: %w", req.NamespacedName, err)
		}
		return ctrl.Result{}, s.answer(ctx, r, pod, kind, refusal)
	}
	return ctrl.Result{}, s.issue(ctx, r, pod, issued)
}

// pod returns the request's pod from the cache, or from the API when the
// cache does not have it (yet), has an older pod of that name, or a copy
// that disagrees with the request (the kubelet asks as soon as the pod is
// bound, often before the cache saw the binding): a denial is permanent, so
// it must come from the API's pod, never from a stale copy. nil when it
// does not exist.
func (s *Signer) pod(ctx context.Context, r *certv1.PodCertificateRequest) (*corev1.Pod, error) {
	key := types.NamespacedName{Namespace: r.Namespace, Name: r.Spec.PodName}
	pod := &corev1.Pod{}
	err := s.Client.Get(ctx, key, pod)
	stale := err == nil && (pod.UID != r.Spec.PodUID || pod.Spec.NodeName != string(r.Spec.NodeName) ||
		pod.Spec.ServiceAccountName != r.Spec.ServiceAccountName)
	if apierrors.IsNotFound(err) || stale {
		pod = &corev1.Pod{}
		err = s.API.Get(ctx, key, pod)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get pod %s: %w", key, err)
	}
	return pod, nil
}

func maxLifetime(r *certv1.PodCertificateRequest) time.Duration {
	if r.Spec.MaxExpirationSeconds == nil {
		return 0
	}
	return time.Duration(*r.Spec.MaxExpirationSeconds) * time.Second
}

// classify maps a CA error to the request's answer; retry: a transient
// error (a cache not synced, the API away), tried again with backoff.
func classify(err error) (kind string, refusal Refusal, retry bool) {
	denied := certv1.PodCertificateRequestConditionTypeDenied
	switch {
	case errors.Is(err, ca.ErrKeyType):
		return denied, Refusal{ReasonUnsupportedKeyType, err.Error() + "; use keyType ECDSAP256 in the podCertificate projection"}, false
	case errors.Is(err, ca.ErrBadRequest):
		return denied, Refusal{ReasonBadRequest, err.Error()}, false
	case errors.Is(err, ca.ErrForbidden):
		return denied, Refusal{ReasonForbidden, err.Error()}, false
	case errors.Is(err, ca.ErrLifetime):
		return certv1.PodCertificateRequestConditionTypeFailed, Refusal{ReasonIntermediateExpiring, err.Error()}, false
	}
	return "", Refusal{}, true
}

// issue writes the leaf into the request's status.
func (s *Signer) issue(ctx context.Context, r *certv1.PodCertificateRequest, pod *corev1.Pod, issued *ca.Issued) error {
	leaf := issued.Certificate
	refresh := refreshAt(s.Refresh, leaf.NotBefore, leaf.NotAfter, s.Draw())
	r.Status.CertificateChain = string(issued.ChainPEM)
	r.Status.NotBefore = &metav1.Time{Time: leaf.NotBefore}
	r.Status.NotAfter = &metav1.Time{Time: leaf.NotAfter}
	r.Status.BeginRefreshAt = &metav1.Time{Time: refresh}
	meta.SetStatusCondition(&r.Status.Conditions, metav1.Condition{
		Type: certv1.PodCertificateRequestConditionTypeIssued, Status: metav1.ConditionTrue,
		Reason: "Issued", Message: fmt.Sprintf("issued %s, serial %x, valid until %s", leaf.URIs[0], leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339)),
		ObservedGeneration: r.Generation,
	})
	if err := s.Client.Status().Update(ctx, r); err != nil {
		return fmt.Errorf("write the certificate of %s/%s: %w", r.Namespace, r.Name, err)
	}
	latency := s.Now().Sub(r.CreationTimestamp.Time)
	s.Metrics.answered("issued", "Issued", latency)
	s.Log.Info("pod certificate issued", "request", r.Namespace+"/"+r.Name, "pod", pod.Name, "id", leaf.URIs[0].String(),
		"serial", fmt.Sprintf("%x", leaf.SerialNumber), "not_after", leaf.NotAfter, "begin_refresh_at", refresh, "latency", latency)
	s.Recorder.Eventf(pod, corev1.EventTypeNormal, "PodCertificateIssued", "%s issued %s (request %s, serial %x, until %s, refresh from %s)",
		contract.SignerName, leaf.URIs[0], r.Name, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339), refresh.UTC().Format(time.RFC3339))
	return nil
}

// answer denies or fails the request with why's reason and message, and
// tells the pod (the kubelet keeps it pending until a certificate comes).
func (s *Signer) answer(ctx context.Context, r *certv1.PodCertificateRequest, pod *corev1.Pod, kind string, why Refusal) error {
	meta.SetStatusCondition(&r.Status.Conditions, metav1.Condition{
		Type: kind, Status: metav1.ConditionTrue, Reason: why.Reason, Message: why.Message, ObservedGeneration: r.Generation,
	})
	if err := s.Client.Status().Update(ctx, r); err != nil {
		return fmt.Errorf("write %s to %s/%s: %w", kind, r.Namespace, r.Name, err)
	}
	s.Metrics.answered(result(kind), why.Reason, 0)
	s.Log.Warn("pod certificate refused", "request", r.Namespace+"/"+r.Name, "pod", r.Spec.PodName, "answer", kind, "reason", why.Reason, "message", why.Message)
	var about client.Object = r
	if pod != nil {
		about = pod
	}
	s.Recorder.Eventf(about, corev1.EventTypeWarning, "PodCertificate"+kind, "%s %s request %s: %s: %s",
		contract.SignerName, result(kind), r.Name, why.Reason, why.Message)
	return nil
}

// result is the metric label and the verb of a terminal condition type.
func result(kind string) string {
	if kind == certv1.PodCertificateRequestConditionTypeFailed {
		return "failed"
	}
	return "denied"
}

// refreshAt is when the kubelet should start fetching the next certificate:
// where p puts it, kept at least 10 minutes from either end of the
// lifetime (the API's rule).
func refreshAt(p renewal.Policy, notBefore, notAfter time.Time, draw float64) time.Time {
	at := p.At(notBefore, notAfter, draw)
	if lo := notBefore.Add(refreshMargin); at.Before(lo) {
		at = lo
	}
	if hi := notAfter.Add(-refreshMargin); at.After(hi) {
		at = hi
	}
	return at
}
