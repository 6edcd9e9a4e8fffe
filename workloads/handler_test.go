package workloads

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/kubetest"
)

type machine struct {
	key  *ecdsa.PrivateKey
	cert *tls.Certificate
}

func csrFor(t *testing.T, key *ecdsa.PrivateKey, id string, dns ...string) string {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// call posts a sign request to path with a bearer token or the machine's
// current certificate; it returns the status and the decoded answer.
func (m *machine) call(t *testing.T, srv *httptest.Server, roots *x509.CertPool, path, token, csr string) (int, signapi.SignResponse, string) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, ServerName: "podtls-ca.example", MinVersion: tls.VersionTLS12}
	if m.cert != nil {
		cfg.Certificates = []tls.Certificate{*m.cert}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	body, _ := json.Marshal(signapi.SignRequest{CSR: csr})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(resp.Body)
	var out signapi.SignResponse
	_ = json.Unmarshal(raw.Bytes(), &out)
	if resp.StatusCode == http.StatusOK {
		leaf, err := tls.X509KeyPair([]byte(out.CertificateChain), pemKey(t, m.key))
		if err != nil {
			t.Fatal(err)
		}
		m.cert = &leaf
	}
	return resp.StatusCode, out, raw.String()
}

func pemKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestHandlerJoinRenew(t *testing.T) {
	env := kubetest.Start(t)
	cs := env.Clientset
	ctx := context.Background()
	const ns, id = "legacy", "spiffe://cluster.local/ns/legacy/sa/billing-vm"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	join := register(ctx, t, cs, Registration{Name: "billing", Namespace: ns, ServiceAccount: "billing-vm",
		Addresses: []netip.Addr{netip.MustParseAddr("10.250.0.1")}, Ports: []Port{{Name: "https", Port: 8443}}})
	mat, err := ca.Generate(time.Now(), ca.Backdate)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(mat, ca.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(HandlerOptions{Checker: &Checker{Kube: cs, Audience: signapi.Audience}, Signer: authority,
		TrustDomain: "cluster.local", TrustPool: authority.TrustPool})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	serving, err := authority.IssueServing([]string{"podtls-ca.example"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*serving}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := authority.TrustPool()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	vm := &machine{key: key}
	token := joinToken(ctx, t, cs, ns, "billing-vm", join, signapi.Audience)

	for _, tc := range []struct {
		name, path, token, csr string
		want                   int
		body                   string
	}{
		{"renew before any certificate", signapi.RenewPath, "", csrFor(t, key, id), http.StatusUnauthorized, "current certificate"},
		{"join without a token", signapi.JoinPath, "", csrFor(t, key, id), http.StatusUnauthorized, "missing join token"},
		{"malformed request keeps the token", signapi.JoinPath, token, "", http.StatusBadRequest, "csr is empty"},
		{"join", signapi.JoinPath, token, csrFor(t, key, id, "billing.legacy.svc"), http.StatusOK, ""},
		{"join again", signapi.JoinPath, token, csrFor(t, key, id), http.StatusForbidden, "the token was used"},
		{"renewal by mTLS", signapi.RenewPath, "", csrFor(t, key, id), http.StatusOK, ""},
		{"renew for another identity", signapi.RenewPath, "", csrFor(t, key, "spiffe://cluster.local/ns/legacy/sa/admin"), http.StatusForbidden, ""},
		{"renew for a name of another namespace", signapi.RenewPath, "", csrFor(t, key, id, "db.prod.svc"), http.StatusForbidden, ""},
	} {
		status, out, raw := vm.call(t, srv, roots, tc.path, tc.token, tc.csr)
		if status != tc.want || !strings.Contains(raw, tc.body) {
			t.Fatalf("%s: %d %s, want %d with %q", tc.name, status, raw, tc.want, tc.body)
		}
		if status == http.StatusOK {
			t.Logf("%s: certificate until %s for %v", tc.name, out.NotAfter, vm.cert.Leaf.URIs)
			svc, err := cs.CoreV1().Services(ns).Get(ctx, "billing", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var st contract.WorkloadCertState
			if err := json.Unmarshal([]byte(svc.Annotations[contract.WorkloadCertificate]), &st); err != nil ||
				st.Serial != hex.EncodeToString(vm.cert.Leaf.SerialNumber.Bytes()) || !strings.HasPrefix(tc.name, st.Via) {
				t.Fatalf("%s: recorded %s=%q", tc.name, contract.WorkloadCertificate, svc.Annotations[contract.WorkloadCertificate])
			}
		}
		if strings.Contains(raw, token) {
			t.Fatalf("%s: the answer shows the token", tc.name)
		}
	}
	if err := cs.CoreV1().Services(ns).Delete(ctx, "billing", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if status, _, raw := vm.call(t, srv, roots, signapi.RenewPath, "", csrFor(t, key, id)); status != http.StatusForbidden || !strings.Contains(raw, "register the machine again") {
		t.Fatalf("renew after the registration was deleted: %d %s", status, raw)
	}
}
