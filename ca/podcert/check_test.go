package podcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/renewal"
)

func request() *certv1.PodCertificateRequest {
	return &certv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "req-1"},
		Spec: certv1.PodCertificateRequestSpec{SignerName: contract.SignerName, PodName: "web-0", PodUID: "uid-1",
			ServiceAccountName: "web", NodeName: "node-a"},
	}
}

func pod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web-0", UID: "uid-1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", NodeName: "node-a"},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name       string
		req        func(*certv1.PodCertificateRequest)
		pod        func(*corev1.Pod) *corev1.Pod
		wantReason string
		wantIn     string
	}{
		{name: "matching pod"},
		{name: "running pod", pod: func(p *corev1.Pod) *corev1.Pod { p.Status.Phase = corev1.PodRunning; return p }},
		{name: "no pod", pod: func(*corev1.Pod) *corev1.Pod { return nil }, wantReason: ReasonPodNotFound, wantIn: "demo/web-0"},
		{name: "another incarnation", pod: func(p *corev1.Pod) *corev1.Pod { p.UID = "uid-2"; return p }, wantReason: ReasonPodMismatch, wantIn: "uid-2"},
		{name: "another service account", req: func(r *certv1.PodCertificateRequest) { r.Spec.ServiceAccountName = "admin" },
			wantReason: ReasonPodMismatch, wantIn: `service account "admin", the pod runs as "web"`},
		{name: "another node", req: func(r *certv1.PodCertificateRequest) { r.Spec.NodeName = "node-b" }, wantReason: ReasonPodMismatch, wantIn: `node "node-b"`},
		{name: "finished pod", pod: func(p *corev1.Pod) *corev1.Pod { p.Status.Phase = corev1.PodSucceeded; return p }, wantReason: ReasonPodFinished},
		{name: "user annotations", req: func(r *certv1.PodCertificateRequest) {
			r.Spec.UnverifiedUserAnnotations = map[string]string{"podtls.io/ttl": "1h", "b": "x"}
		}, wantReason: ReasonInvalidUserAnnotations, wantIn: `"b", "podtls.io/ttl"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, p := request(), pod()
			if tc.req != nil {
				tc.req(r)
			}
			if tc.pod != nil {
				p = tc.pod(p)
			}
			got := Check(r, p)
			switch {
			case tc.wantReason == "" && got != nil:
				t.Fatalf("refused: %+v", got)
			case tc.wantReason != "" && (got == nil || got.Reason != tc.wantReason || !strings.Contains(got.Message, tc.wantIn)):
				t.Fatalf("got %+v, want reason %s with %q", got, tc.wantReason, tc.wantIn)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err             error
		kind, reason    string
		retry           bool
		messageSuggests bool
	}{
		{fmt.Errorf("%w: %w: P-521", ca.ErrBadRequest, ca.ErrKeyType), certv1.PodCertificateRequestConditionTypeDenied, ReasonUnsupportedKeyType, false, true},
		{fmt.Errorf("%w: csr: junk", ca.ErrBadRequest), certv1.PodCertificateRequestConditionTypeDenied, ReasonBadRequest, false, false},
		{fmt.Errorf("%w: DNS SAN", ca.ErrForbidden), certv1.PodCertificateRequestConditionTypeDenied, ReasonForbidden, false, false},
		{fmt.Errorf("%w: soon", ca.ErrLifetime), certv1.PodCertificateRequestConditionTypeFailed, ReasonIntermediateExpiring, false, false},
		{fmt.Errorf("look up pod: %w", ca.ErrNotReady), "", "", true, false},
		{errors.New("etcd timeout"), "", "", true, false},
	} {
		kind, refusal, retry := classify(tc.err)
		if kind != tc.kind || refusal.Reason != tc.reason || retry != tc.retry ||
			tc.messageSuggests != strings.Contains(refusal.Message, "use keyType ECDSAP256") {
			t.Errorf("classify(%v) = %s %+v %v", tc.err, kind, refusal, retry)
		}
	}
}

func TestRefreshAt(t *testing.T) {
	nb := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		policy renewal.Policy
		life   time.Duration
		draw   float64
		want   time.Duration // after nb
	}{
		{renewal.Mesh, 24 * time.Hour, 0, 864 * time.Minute},     // 60 %
		{renewal.Mesh, 24 * time.Hour, 1, 1008 * time.Minute},    // 70 %
		{renewal.Fraction(0.01), time.Hour, 0, 10 * time.Minute}, // test mode: the API's earliest
		{renewal.Fraction(0.99), time.Hour, 0, 50 * time.Minute}, // never within 10 min of the end
		{renewal.Mesh, time.Hour, 0.5, 39 * time.Minute},         // 65 % of an hour
	} {
		if got := refreshAt(tc.policy, nb, nb.Add(tc.life), tc.draw).Sub(nb); got != tc.want {
			t.Errorf("refreshAt(%+v, life %s, draw %v) = nb+%s, want nb+%s", tc.policy, tc.life, tc.draw, got, tc.want)
		}
	}
}

func TestDesiredBundles(t *testing.T) {
	a, b := selfSigned(t, "root A"), selfSigned(t, "root B")
	got, err := desiredBundles([]byte(a + "junk between blocks\n" + b + a))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d bundles, want one per distinct root: %v", len(got), got)
	}
	for name, text := range got {
		if !strings.HasPrefix(name, "podtls.io:mesh:") || len(name) != len("podtls.io:mesh:")+16 || (text != a && text != b) {
			t.Errorf("bundle %s = %q", name, text)
		}
	}
	if _, err := desiredBundles([]byte("no PEM")); err == nil {
		t.Error("an empty bundle published nothing without an error")
	}
}

func selfSigned(t *testing.T, cn string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
