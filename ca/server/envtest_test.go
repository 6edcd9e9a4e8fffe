package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/services"
	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
)

// mintToken signs a service-account JWT like the API server's, for ns/sa
// (with the ServiceAccount's UID), valid from iat to exp.
func mintToken(t *testing.T, signer *kubetest.TokenSigner, ns, sa string, saUID types.UID, iat, exp time.Time) string {
	t.Helper()
	return signer.Mint(t, ns, sa, string(saUID), signapi.Audience, iat, exp, nil)
}

func testPod(ns, name, sa string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "localhost/podtls/test:dev"}},
		},
	}
}

func testService(ns, name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Port: 8443}}},
	}
}

// TestSignEnvtest runs the sign API against a real kube-apiserver: real
// TokenReview, real bound tokens from the TokenRequest API, and Service names
// from the controller's cache-backed lister.
func TestSignEnvtest(t *testing.T) {
	saKey := kubetest.NewTokenSigner(t)
	env := kubetest.Start(t, saKey.Options()...)
	ctx := t.Context()
	kube := env.Clientset
	const ns = "demo"
	env.CreateNamespace(t, ns, nil)
	saObj := env.CreateServiceAccount(t, ns, "web")
	env.CreateNamespace(t, "prod", nil)

	for _, obj := range []*corev1.Service{
		testService(ns, "web", map[string]string{"app": "web"}),
		testService(ns, "web-canary", map[string]string{"app": "web", "track": "canary"}),
		testService(ns, "db", map[string]string{"app": "db"}),
		testService("prod", "web", map[string]string{"app": "web"}),
	} {
		if _, err := kube.CoreV1().Services(obj.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, testPod(ns, "web-0", "web", map[string]string{"app": "web"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The controller's lister: Services and pods from a controller-runtime
	// cache, as the manager's shared cache holds them.
	cached, err := crcache.New(env.Config, crcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Service{}} {
		if _, err := cached.GetInformer(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	api, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	index := &services.Lister{Cache: cached, API: api}
	cacheCtx, stopCache := context.WithCancel(context.Background())
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- cached.Start(cacheCtx) }()
	t.Cleanup(func() {
		stopCache()
		if err := <-cacheDone; err != nil {
			t.Errorf("cache: %v", err)
		}
	})

	mat, err := ca.LoadOrCreate(ctx, kube, ca.SecretOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(mat, ca.Config{Pods: index})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Options{
		Authority:     authority,
		Authenticator: NewTokenReviewAuthenticator(kube.AuthenticationV1().TokenReviews(), TokenReviewOptions{}),
	})

	t.Run("503 while the cache has not started", func(t *testing.T) {
		notStarted, err := crcache.New(env.Config, crcache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		unsynced, err := ca.New(mat, ca.Config{Pods: &services.Lister{Cache: notStarted, API: api}})
		if err != nil {
			t.Fatal(err)
		}
		ts503 := startServer(t, Options{
			Authority:     unsynced,
			Authenticator: NewTokenReviewAuthenticator(kube.AuthenticationV1().TokenReviews(), TokenReviewOptions{}),
		})
		token := env.Token(t, ns, "web", signapi.Audience, time.Hour, pod)
		if status, body := ts503.do(t, http.MethodPost, token, signBody(t, newCSR(t), "")); status != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503: %s", status, body)
		}
	})
	syncCtx, cancelSync := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSync()
	if !cached.WaitForCacheSync(syncCtx) {
		t.Fatal("cache did not sync in 30s")
	}

	t.Run("bound token gets SPIFFE ID and Service names", func(t *testing.T) {
		token := env.Token(t, ns, "web", signapi.Audience, time.Hour, pod)
		status, body := ts.do(t, http.MethodPost, token, signBody(t, newCSR(t, "extra.demo.svc"), "12h"))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		var resp signapi.SignResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		chain := parseChain(t, resp.CertificateChain)
		leaf := chain[0]
		if got := leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/demo/sa/web" {
			t.Errorf("URI SAN %s", got)
		}
		want := []string{"extra.demo.svc", "web.demo.svc", "web.demo.svc.cluster.local"}
		if !slices.Equal(leaf.DNSNames, want) {
			t.Errorf("DNS names %q, want %q (web matches app=web; web-canary and db do not match; prod/web is another namespace)", leaf.DNSNames, want)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(resp.TrustBundle)) {
			t.Fatal("empty trust bundle")
		}
		inters := x509.NewCertPool()
		for _, c := range chain[1:] {
			inters.AddCert(c)
		}
		for _, name := range want {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inters}); err != nil {
				t.Errorf("leaf does not verify for %s against the returned bundle: %v", name, err)
			}
		}
	})

	t.Run("pod created after start gets its Service names", func(t *testing.T) {
		late, err := kube.CoreV1().Pods(ns).Create(ctx, testPod(ns, "web-canary-0", "web", map[string]string{"app": "web", "track": "canary"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		token := env.Token(t, ns, "web", signapi.Audience, time.Hour, late)
		status, body := ts.do(t, http.MethodPost, token, signBody(t, newCSR(t), ""))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		var resp signapi.SignResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		want := []string{"web.demo.svc", "web.demo.svc.cluster.local", "web-canary.demo.svc", "web-canary.demo.svc.cluster.local"}
		if got := parseChain(t, resp.CertificateChain)[0].DNSNames; !slices.Equal(got, want) {
			t.Errorf("DNS names %q, want %q", got, want)
		}
	})

	now := time.Now()
	cases := []struct {
		name   string
		token  func(t *testing.T) string
		csr    string
		status int
	}{
		{"token minted with the API server's key (control)", func(t *testing.T) string {
			return mintToken(t, saKey, ns, "web", saObj.UID, now.Add(-time.Minute), now.Add(time.Hour))
		}, newCSR(t), http.StatusOK},
		{"expired token", func(t *testing.T) string {
			return mintToken(t, saKey, ns, "web", saObj.UID, now.Add(-2*time.Hour), now.Add(-time.Hour))
		}, newCSR(t), http.StatusUnauthorized},
		{"forged token (other key)", func(t *testing.T) string {
			other := kubetest.NewTokenSigner(t)
			return mintToken(t, other, ns, "web", saObj.UID, now.Add(-time.Minute), now.Add(time.Hour))
		}, newCSR(t), http.StatusUnauthorized},
		{"wrong audience", func(t *testing.T) string {
			return env.Token(t, ns, "web", "https://kubernetes.default.svc", time.Hour, pod)
		}, newCSR(t), http.StatusUnauthorized},
		{"token of a deleted pod", func(t *testing.T) string {
			gone, err := kube.CoreV1().Pods(ns).Create(ctx, testPod(ns, "gone", "web", nil), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tok := env.Token(t, ns, "web", signapi.Audience, time.Hour, gone)
			zero := int64(0)
			if err := kube.CoreV1().Pods(ns).Delete(ctx, "gone", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
				t.Fatal(err)
			}
			// The API server learns of the deletion through its own cache;
			// wait until it invalidates the token.
			poll.Eventually(t, 15*time.Second, "the API server to reject the token of a deleted pod", func() (bool, string) {
				r, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
					Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: []string{signapi.Audience}},
				}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return !r.Status.Authenticated, "the token is still authenticated"
			})
			return tok
		}, newCSR(t), http.StatusUnauthorized},
		{"DNS name of another namespace", func(t *testing.T) string {
			return env.Token(t, ns, "web", signapi.Audience, time.Hour, pod)
		}, newCSR(t, "web.prod.svc"), http.StatusForbidden},
		{"malformed CSR", func(t *testing.T) string {
			return env.Token(t, ns, "web", signapi.Audience, time.Hour, pod)
		}, "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n", http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := ts.do(t, http.MethodPost, tc.token(t), signBody(t, tc.csr, ""))
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
		})
	}

	// The server refuses an expired token before asking the API server; check
	// that the API server agrees, so the 401 above is not just our shortcut.
	t.Run("API server rejects the expired token too", func(t *testing.T) {
		expired := mintToken(t, saKey, ns, "web", saObj.UID, now.Add(-2*time.Hour), now.Add(-time.Hour))
		r, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: expired, Audiences: []string{signapi.Audience}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Authenticated {
			t.Fatal("API server authenticated an expired token")
		}
		t.Logf("API server: %s", r.Status.Error)
	})
}

func parseChain(t *testing.T, chainPEM string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(chainPEM)
	for {
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
	if len(out) < 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(out))
	}
	return out
}
