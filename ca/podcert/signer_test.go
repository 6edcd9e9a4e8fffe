package podcert

import (
	"context"
	"testing"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestPodReadsTheAPIWhenTheCacheLags: the kubelet asks for a certificate as
// soon as the pod is bound; the signer's cache may still hold the pod before
// its binding (or an older pod of that name). A permanent denial must never
// come from such a stale copy (a CI run saw "PodMismatch: the pod is bound to
// \"\"" and a pod stuck in Init forever).
func TestPodReadsTheAPIWhenTheCacheLags(t *testing.T) {
	unbound := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web-1", UID: "u1"}, Spec: corev1.PodSpec{ServiceAccountName: "web"}}
	bound := unbound.DeepCopy()
	bound.Spec.NodeName = "node-a"
	req := &certv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "req-1"},
		Spec: certv1.PodCertificateRequestSpec{PodName: "web-1", PodUID: "u1", ServiceAccountName: "web", NodeName: types.NodeName("node-a")}}
	tests := []struct {
		name       string
		cache, api *corev1.Pod
		want       string // the node of the pod read
	}{
		{"cache current", bound, bound, "node-a"},
		{"cache before the binding", unbound, bound, "node-a"},
		{"really unbound", unbound, unbound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Signer{Client: fake.NewClientBuilder().WithObjects(tt.cache.DeepCopy()).Build(),
				API: fake.NewClientBuilder().WithObjects(tt.api.DeepCopy()).Build()}
			pod, err := s.pod(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if pod.Spec.NodeName != tt.want {
				t.Fatalf("read pod bound to %q, want %q", pod.Spec.NodeName, tt.want)
			}
			if tt.want == "node-a" && Check(req, pod) != nil {
				t.Fatalf("refused: %+v", Check(req, pod))
			}
		})
	}
}
