package check

import (
	"context"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
)

func TestPodCertificatesCheck(t *testing.T) {
	bundle := func(name, pemText string) *certv1.ClusterTrustBundle {
		return &certv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{contract.TrustBundleLabel: contract.TrustBundleLabelValue}},
			Spec: certv1.ClusterTrustBundleSpec{SignerName: contract.SignerName, TrustBundle: pemText}}
	}
	pcPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: contract.ContainerName, Args: []string{"--credential-bundle", "/var/run/podtls/certs/credentials.pem"}}}}}
	denied := &certv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Name: "req-1", Namespace: "shop"},
		Spec: certv1.PodCertificateRequestSpec{SignerName: contract.SignerName, PodName: "web-1"},
		Status: certv1.PodCertificateRequestStatus{Conditions: []metav1.Condition{{Type: certv1.PodCertificateRequestConditionTypeDenied,
			Status: metav1.ConditionTrue, Reason: "UnsupportedKeyType", Message: "use ECDSAP256"}}}}
	for _, tc := range []struct {
		name   string
		served bool
		extra  func(roots string) []runtime.Object
		want   output.Level
		in     string
	}{
		{"not served", false, nil, output.Skip, "Kubernetes < 1.37"},
		{"no bundles", true, nil, output.Fail, "not published"},
		{"published", true, func(roots string) []runtime.Object {
			return []runtime.Object{bundle("podtls.io:mesh:a", roots), pcPod}
		}, output.OK, "1 podCertificate, 0 agent"},
		{"a refused request", true, func(roots string) []runtime.Object {
			return []runtime.Object{bundle("podtls.io:mesh:a", roots), denied}
		}, output.Warn, "shop/req-1 (pod web-1): Denied UnsupportedKeyType"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, roots := healthy(t)
			if tc.extra != nil {
				objs = append(objs, tc.extra(string(roots))...)
			}
			kube := fake.NewClientset(objs...)
			if tc.served {
				kube.Resources = []*metav1.APIResourceList{{GroupVersion: "certificates.k8s.io/v1", APIResources: []metav1.APIResource{
					{Name: "clustertrustbundles"}, {Name: "podcertificaterequests"}}}}
			}
			rep := Run(context.Background(), kube, Options{Namespace: "podtls-system", Now: func() time.Time { return now }})
			for _, c := range rep.Checks {
				if c.ID != IDPodCertificates {
					continue
				}
				if c.Level != tc.want || !strings.Contains(c.Message+strings.Join(c.Objects, "\n"), tc.in) {
					t.Fatalf("%s: %s %q %q, want %s with %q", tc.name, c.Level, c.Message, c.Objects, tc.want, tc.in)
				}
				return
			}
			t.Fatalf("no %s check", IDPodCertificates)
		})
	}
}
