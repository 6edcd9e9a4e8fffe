package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
)

// fakeAuth maps tokens to callers; "broken" simulates an unreachable API server.
type fakeAuth map[string]ca.Caller

func (f fakeAuth) Authenticate(_ context.Context, token string) (ca.Caller, error) {
	switch token {
	case "broken":
		return ca.Caller{}, errors.New("dial apiserver: connection refused")
	case "flood":
		return ca.Caller{}, ErrReviewRateLimited
	}
	c, ok := f[token]
	if !ok {
		return ca.Caller{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	return c, nil
}

type staticServices struct {
	names []string
	err   error
}

func (s staticServices) LookupPod(context.Context, string, string, string) (ca.PodFacts, error) {
	return ca.PodFacts{Services: s.names}, s.err
}

var (
	materialMu sync.Mutex
	material   *ca.Material
)

func testAuthority(t testing.TB, pods ca.PodLookup) *ca.Authority {
	t.Helper()
	materialMu.Lock()
	defer materialMu.Unlock()
	if material == nil {
		m, err := ca.Generate(time.Now(), ca.Backdate)
		if err != nil {
			t.Fatal(err)
		}
		material = m
	}
	a, err := ca.New(material, ca.Config{Pods: pods})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type testServer struct {
	url    string
	client *http.Client
	srv    *Server
	bundle []byte
}

// startServer runs a Server on 127.0.0.1 with real TLS until the test ends.
func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.IPs = append(opts.IPs, net.ParseIP("127.0.0.1"))
	if opts.DNSNames == nil {
		opts.DNSNames = ServiceDNSNames("podtls-controller", "podtls-system", "cluster.local")
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server stopped with: %v", err)
		}
	})
	bundle := opts.Authority.TrustBundlePEM()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: true},
	}
	t.Cleanup(client.CloseIdleConnections)
	return &testServer{url: "https://" + ln.Addr().String(), client: client, srv: srv, bundle: bundle}
}

func newCSR(t testing.TB, dns ...string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func (ts *testServer) do(t testing.TB, method, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+signapi.SignPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, signapi.SignPath, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	return resp.StatusCode, b
}

func signBody(t testing.TB, csr, ttl string) []byte {
	b, err := json.Marshal(signapi.SignRequest{CSR: csr, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignAPI(t *testing.T) {
	auth := fakeAuth{
		"web": {Namespace: "demo", ServiceAccount: "web", PodName: "web-0"},
	}
	ts := startServer(t, Options{
		Authority:     testAuthority(t, staticServices{names: []string{"preference"}}),
		Authenticator: auth,
		Rate:          rate.Inf,
	})

	t.Run("valid request", func(t *testing.T) {
		status, body := ts.do(t, http.MethodPost, "web", signBody(t, newCSR(t, "web.demo.svc"), "2h"))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		var resp signapi.SignResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(resp.CertificateChain))
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/demo/sa/web" {
			t.Errorf("URI SAN %s", got)
		}
		want := []string{"web.demo.svc", "preference.demo.svc", "preference.demo.svc.cluster.local"}
		if strings.Join(leaf.DNSNames, ",") != strings.Join(want, ",") {
			t.Errorf("DNS names %v, want %v", leaf.DNSNames, want)
		}
		if d := leaf.NotAfter.Sub(leaf.NotBefore); d != 2*time.Hour+ca.Backdate {
			t.Errorf("validity %s, want 2h + backdate", d)
		}
		if resp.NotAfter != leaf.NotAfter.UTC().Format(time.RFC3339) {
			t.Errorf("not_after %q, leaf %s", resp.NotAfter, leaf.NotAfter)
		}
		if resp.TrustBundle != string(ts.bundle) {
			t.Error("trust bundle differs from the Authority's")
		}
	})

	errCases := []struct {
		name   string
		method string
		token  string
		body   []byte
		status int
	}{
		{"no token", http.MethodPost, "", signBody(t, newCSR(t), ""), http.StatusUnauthorized},
		{"unknown token", http.MethodPost, "forged", signBody(t, newCSR(t), ""), http.StatusUnauthorized},
		{"token review unavailable", http.MethodPost, "broken", signBody(t, newCSR(t), ""), http.StatusServiceUnavailable},
		{"token reviews rate limited", http.MethodPost, "flood", signBody(t, newCSR(t), ""), http.StatusTooManyRequests},
		{"GET not allowed", http.MethodGet, "web", nil, http.StatusMethodNotAllowed},
		{"not JSON", http.MethodPost, "web", []byte("csr=1"), http.StatusBadRequest},
		{"two JSON objects", http.MethodPost, "web", append(signBody(t, newCSR(t), ""), []byte(`{}`)...), http.StatusBadRequest},
		{"empty csr", http.MethodPost, "web", []byte(`{"csr":""}`), http.StatusBadRequest},
		{"malformed csr", http.MethodPost, "web", signBody(t, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", ""), http.StatusBadRequest},
		{"bad ttl", http.MethodPost, "web", signBody(t, newCSR(t), "1 day"), http.StatusBadRequest},
		{"negative ttl", http.MethodPost, "web", signBody(t, newCSR(t), "-1h"), http.StatusBadRequest},
		{"body too large", http.MethodPost, "web", signBody(t, strings.Repeat("A", signapi.MaxRequestBytes), ""), http.StatusRequestEntityTooLarge},
		{"name of another namespace", http.MethodPost, "web", signBody(t, newCSR(t, "db.prod.svc"), ""), http.StatusForbidden},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := ts.do(t, tc.method, tc.token, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			var e signapi.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Message == "" {
				t.Errorf("error body %q is not an signapi.Error with a message (%v)", body, err)
			}
		})
	}

	t.Run("trust bundle", func(t *testing.T) {
		resp, err := ts.client.Get(ts.url + TrustBundlePath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(b, ts.bundle) {
			t.Errorf("status %d, body equal to bundle: %v", resp.StatusCode, bytes.Equal(b, ts.bundle))
		}
	})
}

func TestRateLimit(t *testing.T) {
	ts := startServer(t, Options{
		Authority: testAuthority(t, nil),
		Authenticator: fakeAuth{
			"a": {Namespace: "demo", ServiceAccount: "web", PodName: "web-0"},
			"b": {Namespace: "demo", ServiceAccount: "web", PodName: "web-1"},
		},
		Rate: rate.Limit(0.001), Burst: 3,
	})
	body := signBody(t, newCSR(t), "")
	for i := range 3 {
		if status, b := ts.do(t, http.MethodPost, "a", body); status != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, status, b)
		}
	}
	if status, _ := ts.do(t, http.MethodPost, "a", body); status != http.StatusTooManyRequests {
		t.Fatalf("4th request: status %d, want 429", status)
	}
	if status, _ := ts.do(t, http.MethodPost, "b", body); status != http.StatusOK {
		t.Fatalf("other pod of the same service account: status %d, want 200", status)
	}
}

func TestSignAPINotReady(t *testing.T) {
	ts := startServer(t, Options{
		Authority:     testAuthority(t, staticServices{err: fmt.Errorf("%w: caches syncing", ca.ErrNotReady)}),
		Authenticator: fakeAuth{"web": {Namespace: "demo", ServiceAccount: "web", PodName: "web-0"}},
	})
	if status, body := ts.do(t, http.MethodPost, "web", signBody(t, newCSR(t), "")); status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", status, body)
	}
}

func TestServerTLS(t *testing.T) {
	a := testAuthority(t, nil)
	ts := startServer(t, Options{Authority: a, Authenticator: fakeAuth{}})
	addr := strings.TrimPrefix(ts.url, "https://")
	pool := a.TrustPool()

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "podtls-controller.podtls-system.svc"})
	if err != nil {
		t.Fatalf("TLS with the Service name: %v", err)
	}
	st := conn.ConnectionState()
	_ = conn.Close()
	if st.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(st.Version))
	}
	if leaf := st.PeerCertificates[0]; leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("serving key %s, want ECDSA", leaf.PublicKeyAlgorithm)
	}
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
	conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Errorf("TLS 1.2 handshake: %v", err)
	} else {
		_ = conn.Close()
	}
	if err := ts.srv.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// TestCurl uses the real curl, as an operator would, against the real server.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	a := testAuthority(t, nil)
	ts := startServer(t, Options{Authority: a, Authenticator: fakeAuth{"tok": {Namespace: "demo", ServiceAccount: "web"}}})
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(bundle, ts.bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(curl, "-sS", "--fail-with-body", "--cacert", bundle, "--tlsv1.2",
		"-H", "Authorization: Bearer tok", "-H", "Content-Type: application/json",
		"--data-binary", string(signBody(t, newCSR(t), "")), ts.url+signapi.SignPath).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	var resp signapi.SignResponse
	if err := json.Unmarshal(out, &resp); err != nil || !strings.Contains(resp.CertificateChain, "BEGIN CERTIFICATE") {
		t.Fatalf("curl response %q: %v", out, err)
	}
	out, err = exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", bundle,
		"-X", "POST", "--data-binary", "{}", ts.url+signapi.SignPath).CombinedOutput()
	if err != nil || string(out) != "401" {
		t.Errorf("curl without token: %q %v, want 401", out, err)
	}
}

// TestOpenSSL checks the server's TLS with the real openssl client: the chain
// verifies for the Service name against the trust bundle, TLS 1.3 is
// negotiated, and TLS 1.1 is refused.
func TestOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	ts := startServer(t, Options{Authority: testAuthority(t, nil), Authenticator: fakeAuth{}})
	bundle := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(bundle, ts.bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(ts.url, "https://")
	sClient := func(args ...string) (string, error) {
		cmd := exec.Command(openssl, append([]string{"s_client", "-connect", addr, "-CAfile", bundle, "-brief"}, args...)...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := sClient("-servername", "podtls-controller.podtls-system.svc", "-verify_hostname", "podtls-controller.podtls-system.svc", "-verify_return_error")
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	for _, want := range []string{"Protocol version: TLSv1.3", "Verification: OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("openssl output lacks %q:\n%s", want, out)
		}
	}
	if out, err := sClient("-verify_hostname", "db.prod.svc", "-verify_return_error"); err == nil {
		t.Errorf("openssl accepted the certificate for another host name:\n%s", out)
	}
	// SECLEVEL=0 lets the client offer TLS 1.1, so the refusal must come
	// from the server (a protocol_version alert), not from the client's policy.
	out, err = sClient("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
	if err == nil || !strings.Contains(out, "protocol version") {
		t.Errorf("TLS 1.1: want the server's protocol_version alert, got err %v:\n%s", err, out)
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		h, want string
		ok      bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc ", "abc", true},
		{"Basic abc", "", false},
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"", "", false},
		{"Bearer " + strings.Repeat("a", maxTokenBytes+1), "", false},
	} {
		got, ok := bearerToken(tc.h)
		if got != tc.want || ok != tc.ok {
			t.Errorf("bearerToken(%.20q) = %q, %v; want %q, %v", tc.h, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStatusOf(t *testing.T) {
	for err, want := range map[error]int{
		fmt.Errorf("x: %w", ca.ErrBadRequest): 400,
		fmt.Errorf("x: %w", ca.ErrForbidden):  403,
		fmt.Errorf("x: %w", ca.ErrNotReady):   503,
		errors.New("boom"):                    500,
	} {
		if got := statusOf(err); got != want {
			t.Errorf("statusOf(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, Options{
		Authority:     testAuthority(t, nil),
		Authenticator: fakeAuth{"web": {Namespace: "demo", ServiceAccount: "web"}},
		Metrics:       reg,
	})
	ts.do(t, http.MethodPost, "web", signBody(t, newCSR(t), ""))
	ts.do(t, http.MethodPost, "nope", signBody(t, newCSR(t), ""))
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	for key, want := range map[string]float64{
		"podtls_ca_sign_requests_total/200":                  1,
		"podtls_ca_sign_requests_total/401":                  1,
		"podtls_ca_sign_duration_seconds":                    1,
		"podtls_ca_intermediate_not_after_timestamp_seconds": float64(ts.srv.opts.Authority.IntermediateNotAfter().Unix()),
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
