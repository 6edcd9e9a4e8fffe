package webhook_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testctl"
	"github.com/podtls/podtls/webhook/audit"
)

// TestController runs the whole podtls-controller in-process against a real
// API server, reached by URL (--webhook-url): it must bootstrap its CA, serve
// the webhook with a certificate from that CA, patch the caBundle, distribute
// the trust bundle, report pods that missed injection, and serve endpoint
// discovery to the certificates it signs.
func TestController(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	const ctrlNS = "podtls-system"
	env.CreateNamespace(t, ctrlNS, nil)

	// Installed as the chart will: service client config, no caBundle yet.
	testctl.CreateWebhookConfiguration(t, env.Clientset)
	opts := testctl.Options(t, ctrlNS)
	opts.LeaderElect = true
	whURL := opts.WebhookURL
	ctl := testctl.Start(t, env.Config, opts)

	caSecret, err := env.Clientset.CoreV1().Secrets(ctrlNS).Get(ctx, opts.CASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CA Secret not created: %v", err)
	}
	roots := caSecret.Data["ca.crt"]
	if len(roots) == 0 {
		t.Fatalf("CA Secret has no ca.crt: keys %v", keys(caSecret.Data))
	}

	t.Run("caBundle and URL patched, serving certificate from the CA", func(t *testing.T) {
		got, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "podtls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range got.Webhooks {
			if string(w.ClientConfig.CABundle) != string(roots) || w.ClientConfig.URL == nil || !strings.HasPrefix(*w.ClientConfig.URL, whURL+"/") {
				t.Errorf("%s: caBundle %d bytes, url %v", w.Name, len(w.ClientConfig.CABundle), w.ClientConfig.URL)
			}
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(roots)
		conn, err := tls.Dial("tcp", opts.WebhookAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("webhook certificate does not verify against the CA roots: %v", err)
		}
		_ = conn.Close()
	})

	t.Run("labelled namespace: injected with the current roots, trust bundle distributed", func(t *testing.T) {
		env.CreateNamespace(t, "ctl-labelled", map[string]string{contract.Inject: contract.NamespaceEnabled})
		var p *corev1.Pod
		poll.Eventually(t, time.Minute, "admission through the patched configuration", func() (bool, string) {
			var err error
			p, err = env.Clientset.CoreV1().Pods("ctl-labelled").Create(ctx, pod("ctl-labelled", "app", map[string]string{contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
			if err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		if sidecars(p) != 1 {
			t.Fatalf("not injected: %+v", p.Spec.InitContainers)
		}
		if !containsEnv(p.Spec.InitContainers[0].Env, contract.EnvTrustRoots, string(roots)) {
			t.Error("PODTLS_TRUST_ROOTS is not the CA's roots")
		}
		waitBundle(t, env, "ctl-labelled", roots)
	})

	t.Run("annotated pod in an unlabelled namespace: bundle follows the pod", func(t *testing.T) {
		env.CreateNamespace(t, "ctl-optin", nil)
		p, err := env.Clientset.CoreV1().Pods("ctl-optin").Create(ctx, pod("ctl-optin", "app", map[string]string{contract.Inject: "true", contract.Upstreams: "preference.ctl-labelled.svc:8443@9001"}), metav1.CreateOptions{})
		if err != nil || sidecars(p) != 1 {
			t.Fatalf("not injected: %v", err)
		}
		waitBundle(t, env, "ctl-optin", roots)
	})

	t.Run("pod that missed injection gets a Warning event", func(t *testing.T) {
		env.CreateNamespace(t, "ctl-late", nil)
		if _, err := env.Clientset.CoreV1().Pods("ctl-late").Create(ctx, pod("ctl-late", "early", map[string]string{contract.Inbound: "8443:8080"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Labelling the namespace afterwards leaves an uninjected pod behind.
		ns, err := env.Clientset.CoreV1().Namespaces().Get(ctx, "ctl-late", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Labels[contract.Inject] = contract.NamespaceEnabled
		if _, err := env.Clientset.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No touch on the pod: the label change alone makes the audit look again.
		waitEvent(t, env, "ctl-late", "early")
	})

	t.Run("CA sign API serves the trust bundle", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(roots)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
			ServerName: opts.ServiceName + "." + ctrlNS + ".svc"}}}
		resp, err := c.Get("https://" + opts.CAAddr + "/v1/trust-bundle")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != string(roots) {
			t.Errorf("trust bundle: %d %q", resp.StatusCode, b)
		}
	})

	var meshCert *tls.Certificate // issued below, used by the discovery subtest
	t.Run("CA signs for an injected pod, with the names of its Services", func(t *testing.T) {
		const ns = "ctl-labelled"
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "preference", Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "preference"}, Ports: []corev1.ServicePort{{Port: 8443}}}}
		if _, err := env.Clientset.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := pod(ns, "preference-0", map[string]string{contract.Inbound: "8443:8080"})
		p.Labels = map[string]string{"app": "preference"}
		p, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		token := env.Token(t, ns, "default", signapi.Audience, time.Hour, p)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(signapi.SignRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(roots)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
			ServerName: opts.ServiceName + "." + ctrlNS + ".svc"}}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+opts.CAAddr+signapi.SignPath, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		poll.Eventually(t, time.Minute, "sign", func() (bool, string) {
			resp, err = c.Do(req.Clone(ctx))
			if err != nil {
				return false, err.Error()
			}
			if resp.StatusCode == http.StatusServiceUnavailable {
				resp.Body.Close()
				req.Body = io.NopCloser(bytes.NewReader(body))
				return false, "503"
			}
			return true, ""
		})
		defer resp.Body.Close()
		var out signapi.SignResponse
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("sign: %d %v", resp.StatusCode, err)
		}
		block, _ := pem.Decode([]byte(out.CertificateChain))
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(leaf.DNSNames, "preference."+ns+".svc") || len(leaf.URIs) != 1 ||
			leaf.URIs[0].String() != "spiffe://cluster.local/ns/"+ns+"/sa/default" {
			t.Errorf("leaf names: dns %v uri %v", leaf.DNSNames, leaf.URIs)
		}
		meshCert = &tls.Certificate{PrivateKey: key, Leaf: leaf}
		for rest := []byte(out.CertificateChain); ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			meshCert.Certificate = append(meshCert.Certificate, b.Bytes)
		}
	})

	t.Run("discovery answers a mesh certificate from the CA", func(t *testing.T) {
		if meshCert == nil {
			t.Skip("no mesh certificate: signing failed")
		}
		const ns = "ctl-labelled"
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "preference-1", Labels: map[string]string{discoveryv1.LabelServiceName: "preference"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8443), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}}},
		}
		if _, err := env.Clientset.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(roots)
		client := func(cert *tls.Certificate) *http.Client {
			cfg := &tls.Config{RootCAs: pool, ServerName: opts.ServiceName + "." + ctrlNS + ".svc"}
			if cert != nil {
				cfg.Certificates = []tls.Certificate{*cert}
			}
			return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		}
		// The short name is a Service of the caller's namespace.
		url := "https://" + opts.CAAddr + discoveryapi.EndpointsPath + "?host=preference&port=8443"
		poll.Eventually(t, 30*time.Second, "the slice's endpoint in the answer", func() (bool, string) {
			resp, err := client(meshCert).Get(url)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			var ans discoveryapi.Endpoints
			if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != http.StatusOK {
				return false, fmt.Sprintf("%d %v", resp.StatusCode, err)
			}
			ok := len(ans.Endpoints) == 1 && ans.Endpoints[0].Address == "10.1.0.5" && ans.Endpoints[0].Ready &&
				ans.Service == "preference."+ns+".svc"
			return ok, fmt.Sprintf("%+v", ans)
		})
		resp, err := client(nil).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("without a client certificate: %d, want 401", resp.StatusCode)
		}
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		start := time.Now()
		if err := ctl.Stop(); err != nil {
			t.Errorf("controller.Run: %v", err)
		}
		t.Logf("controller stopped in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("pod admitted while the controller was down is reported after restart", func(t *testing.T) {
		// failurePolicy Ignore admits the opt-in pod without a sidecar...
		p, err := env.Clientset.CoreV1().Pods("ctl-optin").Create(ctx, pod("ctl-optin", "while-down",
			map[string]string{contract.Inject: "true", contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err != nil || sidecars(p) != 0 {
			t.Fatalf("want an uninjected pod admitted: %v", err)
		}
		// ...and the restarted controller (same CA from its Secret) reports it.
		testctl.Start(t, env.Config, opts)
		sec, err := env.Clientset.CoreV1().Secrets(ctrlNS).Get(ctx, opts.CASecret, metav1.GetOptions{})
		if err != nil || string(sec.Data["ca.crt"]) != string(roots) {
			t.Fatalf("CA changed across restart: %v", err)
		}
		waitEvent(t, env, "ctl-optin", "while-down")
	})
}

// waitEvent waits for the audit's Warning event on a pod.
func waitEvent(t *testing.T, env *kubetest.Env, ns, podName string) {
	t.Helper()
	poll.Eventually(t, time.Minute, audit.EventReason+" event on "+ns+"/"+podName, func() (bool, string) {
		evs, err := env.Clientset.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.Reason == audit.EventReason && e.InvolvedObject.Name == podName && e.Type == corev1.EventTypeWarning {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})
}

// waitBundle waits for the trust-bundle ConfigMap in ns to hold roots.
func waitBundle(t *testing.T, env *kubetest.Env, ns string, roots []byte) {
	t.Helper()
	poll.Eventually(t, time.Minute, "trust bundle in "+ns, func() (bool, string) {
		cm, err := env.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), contract.TrustBundleConfigMap, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return cm.Data[contract.TrustBundleKey] == string(roots), "ca.crt differs from the CA's roots"
	})
}

func containsEnv(env []corev1.EnvVar, name, value string) bool {
	for _, e := range env {
		if e.Name == name && e.Value == value {
			return true
		}
	}
	return false
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
