package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecar/certs"
)

// TestRenewCommand: "podtls-sidecar renew" makes a running agent-mode sidecar
// fetch a new certificate now; the new serial is served at once. A sidecar in
// file mode has nothing to renew and says so.
func TestRenewCommand(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	ca := testpki.NewSignServer(t, p.ca, serverID)
	token := p.write(t, "token", []byte("projected-token"))
	certDir := filepath.Join(p.dir, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, []string{"PODTLS_TRUST_ROOTS=" + string(ca.RootPEM())},
		"--inbound", freeAddr(t)+"="+app.addr, "--cert-dir", certDir,
		"--ca-url", ca.URL, "--token-file", token, "--cert-ttl", "1h")
	before := meshSerial(t, sc)

	// A failing CA: the command fails, naming the CA's answer, and the
	// current certificate stays.
	ca.Fail(http.StatusServiceUnavailable, "")
	if out, err := runCmd(t, "", binary, "renew", "--admin", sc.admin); err == nil || !strings.Contains(out, "502") {
		t.Fatalf("renew with a failing CA: %v %q", err, out)
	}
	if s := meshSerial(t, sc); s != before {
		t.Fatalf("serial %s after a failed renewal, want %s", s, before)
	}
	ca.Fail(0, "")

	out, err := runCmd(t, "", binary, "renew", "--admin", sc.admin)
	if err != nil || !strings.HasPrefix(out, "renewed: serial ") {
		t.Fatalf("renew: %v %q", err, out)
	}
	after := meshSerial(t, sc)
	if after == before || !strings.Contains(out, after) {
		t.Fatalf("renew printed %q; served serial %s, before %s", out, after, before)
	}

	// Forced renewals are spaced: the next one right away is refused.
	if out, err := runCmd(t, "", binary, "renew", "--admin", sc.admin); err == nil || !strings.Contains(out, "429") {
		t.Fatalf("second renew at once: %v %q", err, out)
	}
	if s := meshSerial(t, sc); s != after {
		t.Fatalf("serial %s after a refused renewal, want %s", s, after)
	}

	// Only POST.
	if code, _ := sc.get("/renew"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /renew: %d, want 405", code)
	}

	// File mode.
	fileSC := startSidecar(t, nil, "--inbound", freeAddr(t)+"="+app.addr,
		"--cert-dir", p.certDir(t, "files", p.serverLeaf(t)), "--trust-bundle", p.caFile)
	if out, err := runCmd(t, "", binary, "renew", "--admin", fileSC.admin); err == nil || !strings.Contains(out, "409") {
		t.Fatalf("renew in file mode: %v %q", err, out)
	}

	// Nobody listening.
	if out, err := runCmd(t, "", binary, "renew", "--admin", freeAddr(t), "--timeout", "2s"); err == nil || !strings.Contains(out, "renew") {
		t.Fatalf("renew without a sidecar: %v %q", err, out)
	}
}

func meshSerial(t *testing.T, sc *sidecar) string {
	t.Helper()
	code, body := sc.get("/certs")
	var snap certs.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil || code != http.StatusOK || snap.Mesh == nil {
		t.Fatalf("/certs: %d %v %s", code, err, body)
	}
	return snap.Mesh.Serial
}
