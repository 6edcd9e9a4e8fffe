// Package podcert is podtls's signer of Kubernetes PodCertificateRequests
// (certificates.k8s.io/v1, Kubernetes 1.37) for the signer name
// contract.SignerName: the kubelet makes the pod's key on the node and asks
// for a certificate; the signer checks the request against the pod, has the
// internal CA (ca.Authority.SignPodCertificate) issue the pod's SPIFFE leaf
// and writes it into the request's status, or denies it with a reason. It
// also publishes the CA's roots as ClusterTrustBundles the pods mount.
//
// The decisions are pure (Check, refreshAt); the reconciler and the
// publisher do the I/O.
package podcert

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
)

// Reasons of the Denied and Failed conditions the signer sets, also the
// reasons of its Events and the reason label of its metrics.
const (
	// ReasonUnsupportedKeyType: the key is not one the CA accepts (ECDSA
	// P-256/P-384, Ed25519, RSA 2048-8192 bits); the message suggests
	// ECDSAP256.
	ReasonUnsupportedKeyType = certv1.PodCertificateRequestConditionUnsupportedKeyType
	// ReasonInvalidUserAnnotations: spec.unverifiedUserAnnotations holds a
	// key (podtls reads none: AcceptedUserAnnotations).
	ReasonInvalidUserAnnotations = certv1.PodCertificateRequestConditionInvalidUserConfig
	// ReasonPodMismatch: the request's pod UID, service account or node is
	// not the pod's.
	ReasonPodMismatch = "PodMismatch"
	// ReasonPodNotFound: no such pod, past a grace period for caches.
	ReasonPodNotFound = "PodNotFound"
	// ReasonPodFinished: the pod has succeeded or failed.
	ReasonPodFinished = "PodFinished"
	// ReasonForbidden: the CA's name policy refused a name the pod asks for
	// (its podtls.io/dns-names).
	ReasonForbidden = "Forbidden"
	// ReasonBadRequest: the stub PKCS#10 request does not parse or verify.
	ReasonBadRequest = "BadRequest"
	// ReasonIntermediateExpiring (Failed): the CA's intermediate expires
	// within the hour a pod certificate needs.
	ReasonIntermediateExpiring = "IntermediateExpiring"
	// ReasonSignError (Failed): signing failed for another reason.
	ReasonSignError = "SignError"
)

// AcceptedUserAnnotations are the keys of spec.unverifiedUserAnnotations
// (a podCertificate projection's userAnnotations) the signer reads: none
// today. Any key denies the request, so a setting the signer would ignore
// never passes silently.
var AcceptedUserAnnotations = []string{}

// Refusal is why a request is denied: Reason is a Reason* constant.
type Refusal struct {
	Reason, Message string
}

// Check compares a request with its pod (nil: not found). A nil result
// means the request may go to the CA, which applies its own policy.
func Check(req *certv1.PodCertificateRequest, pod *corev1.Pod) *Refusal {
	if keys := unknownKeys(req.Spec.UnverifiedUserAnnotations); len(keys) > 0 {
		return &Refusal{ReasonInvalidUserAnnotations, fmt.Sprintf(
			"unverifiedUserAnnotations %s: signer %s reads no user annotations; remove userAnnotations from the podCertificate projection",
			strings.Join(keys, ", "), req.Spec.SignerName)}
	}
	if pod == nil {
		return &Refusal{ReasonPodNotFound, fmt.Sprintf("pod %s/%s does not exist", req.Namespace, req.Spec.PodName)}
	}
	var diffs []string
	if pod.UID != req.Spec.PodUID {
		diffs = append(diffs, fmt.Sprintf("pod UID %s, the pod's is %s", req.Spec.PodUID, pod.UID))
	}
	if req.Spec.ServiceAccountName != pod.Spec.ServiceAccountName {
		diffs = append(diffs, fmt.Sprintf("service account %q, the pod runs as %q", req.Spec.ServiceAccountName, pod.Spec.ServiceAccountName))
	}
	if string(req.Spec.NodeName) != pod.Spec.NodeName {
		diffs = append(diffs, fmt.Sprintf("node %q, the pod is bound to %q", req.Spec.NodeName, pod.Spec.NodeName))
	}
	if len(diffs) > 0 {
		return &Refusal{ReasonPodMismatch, "the request names " + strings.Join(diffs, "; ")}
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return &Refusal{ReasonPodFinished, fmt.Sprintf("pod %s/%s has %s", pod.Namespace, pod.Name, strings.ToLower(string(pod.Status.Phase)))}
	}
	return nil
}

func unknownKeys(m map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(AcceptedUserAnnotations, k) {
			out = append(out, fmt.Sprintf("%q", k))
		}
	}
	return out
}
