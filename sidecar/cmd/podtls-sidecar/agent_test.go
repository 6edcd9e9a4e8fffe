package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// TestAgentMode: the sidecar requests its certificate from a CA speaking the
// /v1/sign contract, trusting the CA through PODTLS_TRUST_ROOTS; it is not
// ready while the CA fails and serves mTLS once the certificate arrives.
func TestAgentMode(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	ca := testpki.NewSignServer(t, p.ca, serverID)
	ca.Fail(http.StatusServiceUnavailable, "")
	token := p.write(t, "token", []byte("projected-token"))
	certDir := filepath.Join(p.dir, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	inbound := freeAddr(t)
	sc := launch(t, []string{"PODTLS_TRUST_ROOTS=" + string(ca.RootPEM())},
		"--inbound", inbound+"="+app.addr, "--cert-dir", certDir,
		"--ca-url", ca.URL, "--token-file", token, "--dns-name", "server.demo.svc", "--cert-ttl", "1h")
	// The agent has asked the CA and failed.
	poll.Eventually(t, 15*time.Second, "a failed sign request", func() (bool, string) {
		sc.failIfExited(t)
		return sc.metric(t, `podtls_sidecar_agent_sign_requests_total{result="transient"}`) != "", "none counted yet"
	})
	if code, _ := sc.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while the CA fails, want 503", code)
	}
	// The legacy-mode postStart hook blocks while the sidecar is not ready...
	if out, err := runCmd(t, "", binary, "wait-ready", "--admin", sc.admin, "--timeout", "700ms"); err == nil || !strings.Contains(out, "503") {
		t.Fatalf("wait-ready before the certificate: %v %s", err, out)
	}
	ca.Fail(0, "")
	// ... and returns once it is.
	if out, err := runCmd(t, "", binary, "wait-ready", "--admin", sc.admin, "--timeout", "10s"); err != nil {
		t.Fatalf("wait-ready: %v %s", err, out)
	}
	sc.waitReady(t)
	body, _, err := httpGet(context.Background(), inbound, goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc"))
	if err != nil || !strings.Contains(body, "hello from backend") {
		t.Fatalf("request after agent bootstrap: %v %q", err, body)
	}
	if _, certsJSON := sc.get("/certs"); !strings.Contains(certsJSON, serverID) || !strings.Contains(certsJSON, "server.demo.svc") {
		t.Fatalf("/certs: %s", certsJSON)
	}
	if st, err := os.Stat(filepath.Join(certDir, "tls.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tls.key: %v %v", st, err)
	}
	if m := sc.metric(t, `podtls_sidecar_agent_sign_requests_total{result="transient"}`); m == "" {
		t.Fatal("failed sign requests not counted")
	}
}
