package podcert_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrl "sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/podcert"
	"github.com/podtls/podtls/ca/services"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
)

// signerEnv is a real API server (envtest) with namespace demo, service
// account web, Service web and pod web-0 bound to node-a, and a manager
// running the signer and the trust-bundle publisher.
type signerEnv struct {
	env       *kubetest.Env
	kube      client.Client
	mgr       ctrl.Manager
	authority *ca.Authority
	mat       *ca.Material
	metrics   *podcert.Metrics
	sa        *corev1.ServiceAccount
	pod       *corev1.Pod
}

// startSigner starts a signerEnv, or skips where the API server does not
// serve PodCertificateRequests.
func startSigner(tb testing.TB) *signerEnv {
	tb.Helper()
	env := kubetest.Start(tb)
	res, err := env.Clientset.Discovery().ServerResourcesForGroupVersion("certificates.k8s.io/v1")
	if err != nil || !slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "podcertificaterequests" }) {
		tb.Skipf("this API server does not serve certificates.k8s.io/v1 podcertificaterequests (Kubernetes < 1.37): %v", err)
	}
	ctx := tb.Context()
	e := &signerEnv{env: env, kube: env.Client}
	env.CreateNamespace(tb, "demo", nil)
	e.sa = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 8443}}}}
	e.pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web-0", Labels: map[string]string{"app": "web"},
		Annotations: map[string]string{contract.DNSNames: "api.demo.svc"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	for _, o := range []client.Object{e.sa, svc, e.pod} {
		if err := e.kube.Create(ctx, o); err != nil {
			tb.Fatal(err)
		}
	}
	if e.mgr, err = ctrl.New(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&certv1.PodCertificateRequest{}: {Field: fields.OneTermEqualSelector("spec.signerName", contract.SignerName)},
		}}}); err != nil {
		tb.Fatal(err)
	}
	if e.mat, err = ca.Generate(time.Now(), ca.Backdate); err != nil {
		tb.Fatal(err)
	}
	if e.authority, err = ca.New(e.mat, ca.Config{Pods: &services.Lister{Cache: e.mgr.GetCache(), API: e.mgr.GetAPIReader()}}); err != nil {
		tb.Fatal(err)
	}
	if e.metrics, err = podcert.NewMetrics(prometheus.NewRegistry()); err != nil {
		tb.Fatal(err)
	}
	signer := &podcert.Signer{Client: e.mgr.GetClient(), API: e.mgr.GetAPIReader(), Authority: e.authority, Metrics: e.metrics,
		PodGrace: time.Second, Log: slog.New(slog.DiscardHandler)}
	if err := signer.SetupWithManager(e.mgr); err != nil {
		tb.Fatal(err)
	}
	if err := e.mgr.Add(&podcert.Publisher{Client: e.mgr.GetClient(), API: e.mgr.GetAPIReader(), Bundle: e.authority.TrustBundlePEM,
		Interval: 100 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}); err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.mgr.Start(ctx) }()
	tb.Cleanup(func() {
		if err := <-done; err != nil {
			tb.Errorf("manager: %v", err)
		}
	})
	return e
}

// request is a PodCertificateRequest for web-0 as its kubelet would make
// it, with a stub CSR of key.
func (e *signerEnv) request(tb testing.TB, name string, key crypto.Signer) *certv1.PodCertificateRequest {
	tb.Helper()
	stub, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return &certv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name},
		Spec: certv1.PodCertificateRequestSpec{SignerName: contract.SignerName, PodName: e.pod.Name, PodUID: e.pod.UID,
			ServiceAccountName: "web", ServiceAccountUID: e.sa.UID, NodeName: "node-a", NodeUID: "node-a-uid",
			MaxExpirationSeconds: ptr.To[int32](3600), StubPKCS10Request: stub}}
}

// TestSignerEnvtest runs the signer and the trust-bundle publisher against a
// real API server (1.37: PodCertificateRequest and ClusterTrustBundle
// served): the API server itself validates every answer (chain, key, times,
// beginRefreshAt) and the sign permission is checked on the status write.
func TestSignerEnvtest(t *testing.T) {
	e := startSigner(t)
	ctx, kube, pod, authority, mat, m := t.Context(), e.kube, e.pod, e.authority, e.mat, e.metrics

	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	newRequest := func(name string, key crypto.Signer, edit func(*certv1.PodCertificateRequestSpec)) *certv1.PodCertificateRequest {
		t.Helper()
		r := e.request(t, name, key)
		if edit != nil {
			edit(&r.Spec)
		}
		if err := kube.Create(ctx, r); err != nil {
			t.Fatalf("create request %s: %v", name, err)
		}
		return r
	}
	good := newRequest("good", p256, nil)
	wrongSA := newRequest("wrong-sa", p256, func(s *certv1.PodCertificateRequestSpec) { s.ServiceAccountName = "admin" })
	annotated := newRequest("annotated", p256, func(s *certv1.PodCertificateRequestSpec) {
		s.UnverifiedUserAnnotations = map[string]string{"example.com/ttl": "1h"}
	})
	bigCurve := newRequest("p521", p521, nil)
	ghost := newRequest("ghost", p256, func(s *certv1.PodCertificateRequestSpec) { s.PodName = "ghost"; s.PodUID = "ghost-uid" })
	other := newRequest("other-signer", p256, func(s *certv1.PodCertificateRequestSpec) { s.SignerName = "example.com/other" })

	answer := func(r *certv1.PodCertificateRequest) *certv1.PodCertificateRequest {
		t.Helper()
		got := &certv1.PodCertificateRequest{}
		until(t, 30*time.Second, "request "+r.Name+" answered", func() bool {
			return kube.Get(ctx, client.ObjectKeyFromObject(r), got) == nil && len(got.Status.Conditions) > 0
		})
		return got
	}

	issued := answer(good)
	if !meta.IsStatusConditionTrue(issued.Status.Conditions, certv1.PodCertificateRequestConditionTypeIssued) {
		t.Fatalf("good request: %+v", issued.Status.Conditions)
	}
	chain := parseChain(t, issued.Status.CertificateChain)
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: authority.TrustPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("issued chain does not verify: %v", err)
	}
	if got := leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/demo/sa/web" {
		t.Errorf("URI SAN %s", got)
	}
	if want := []string{"api.demo.svc", "web.demo.svc", "web.demo.svc.cluster.local"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNS names %q, want %q (podtls.io/dns-names, then the Service that selects the pod)", leaf.DNSNames, want)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != time.Hour || !p256.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("lifetime %s (want maxExpirationSeconds, 1h), key matches %v", life, p256.PublicKey.Equal(leaf.PublicKey))
	}
	if r := issued.Status.BeginRefreshAt.Time; r.Before(leaf.NotBefore.Add(36*time.Minute)) || r.After(leaf.NotBefore.Add(42*time.Minute)) {
		t.Errorf("beginRefreshAt %s, want 60-70%% of the hour from %s", r, leaf.NotBefore)
	}

	for _, tc := range []struct {
		r            *certv1.PodCertificateRequest
		kind, reason string
	}{
		{wrongSA, certv1.PodCertificateRequestConditionTypeDenied, podcert.ReasonPodMismatch},
		{annotated, certv1.PodCertificateRequestConditionTypeDenied, certv1.PodCertificateRequestConditionInvalidUserConfig},
		{bigCurve, certv1.PodCertificateRequestConditionTypeDenied, certv1.PodCertificateRequestConditionUnsupportedKeyType},
		{ghost, certv1.PodCertificateRequestConditionTypeDenied, podcert.ReasonPodNotFound},
	} {
		got := answer(tc.r)
		c := meta.FindStatusCondition(got.Status.Conditions, tc.kind)
		if c == nil || c.Reason != tc.reason || got.Status.CertificateChain != "" {
			t.Errorf("request %s: conditions %+v, want %s %s and no chain", tc.r.Name, got.Status.Conditions, tc.kind, tc.reason)
		}
	}
	if got := answer(bigCurve); !strings.Contains(got.Status.Conditions[0].Message, "ECDSAP256") {
		t.Errorf("UnsupportedKeyType message suggests no key type: %q", got.Status.Conditions[0].Message)
	}
	until(t, 10*time.Second, "an Event on the pod naming the mismatch", func() bool {
		evs := &corev1.EventList{}
		_ = kube.List(ctx, evs, client.InNamespace("demo"))
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
			return e.InvolvedObject.Name == pod.Name && e.Reason == "PodCertificateDenied" && strings.Contains(e.Message, podcert.ReasonPodMismatch)
		})
	})
	if got := testutil.ToFloat64(m.Answers().WithLabelValues("denied", podcert.ReasonPodMismatch)); got != 1 {
		t.Errorf("denied PodMismatch counted %v times", got)
	}
	// Nobody answers another signer's request: its status stays empty.
	if err := kube.Get(ctx, client.ObjectKeyFromObject(other), other); err != nil || len(other.Status.Conditions) != 0 {
		t.Errorf("request of another signer: %+v, %v", other.Status, err)
	}

	// The roots as ClusterTrustBundles: one per root, a rotation root beside
	// the current one, the retired one removed.
	bundles := func(n int) []certv1.ClusterTrustBundle {
		t.Helper()
		var got []certv1.ClusterTrustBundle
		until(t, 10*time.Second, "ClusterTrustBundles of "+contract.SignerName, func() bool {
			l := &certv1.ClusterTrustBundleList{}
			if kube.List(ctx, l, client.MatchingLabels{contract.TrustBundleLabel: contract.TrustBundleLabelValue}) != nil {
				return false
			}
			got = l.Items
			return len(got) == n
		})
		return got
	}
	first := bundles(1)[0]
	if first.Spec.SignerName != contract.SignerName || !strings.HasPrefix(first.Name, "podtls.io:mesh:") ||
		!parseChain(t, first.Spec.TrustBundle)[0].Equal(mat.Roots[0]) {
		t.Fatalf("bundle %s for %s", first.Name, first.Spec.SignerName)
	}
	next, err := ca.Generate(time.Now(), ca.Backdate)
	if err != nil {
		t.Fatal(err)
	}
	rotating := *mat
	rotating.ExtraRoots = next.Roots
	if err := authority.SetMaterial(&rotating); err != nil {
		t.Fatal(err)
	}
	bundles(2)
	next.ExtraRoots = mat.Roots // signing switched to the new root; the old one still published
	if err := authority.SetMaterial(next); err != nil {
		t.Fatal(err)
	}
	bundles(2)
	next.ExtraRoots = nil
	if err := authority.SetMaterial(next); err != nil {
		t.Fatal(err)
	}
	if last := bundles(1)[0]; !parseChain(t, last.Spec.TrustBundle)[0].Equal(next.Roots[0]) {
		t.Fatalf("after the rotation the bundle holds %s", parseChain(t, last.Spec.TrustBundle)[0].Subject)
	}
}

// until polls cond with poll.Eventually.
func until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.Eventually(t, timeout, what, func() (bool, string) { return cond(), "" })
}

func parseChain(t *testing.T, text string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := []byte(text); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in %q", text)
	}
	return out
}
