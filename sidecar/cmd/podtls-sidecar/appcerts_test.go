package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// TestAppCertsFilesOnly runs the sidecar with no listener at all, only
// delivering the mesh and external certificates as files for the app:
// they are written before /readyz, rewritten within seconds of a renewal
// with one POST to the app's reload endpoint, and a corrupt renewal
// changes nothing.
func TestAppCertsFilesOnly(t *testing.T) {
	p := newPKI(t)
	meshDir := p.certDir(t, "mesh", p.serverLeaf(t))
	issuer := p.other.Intermediate(t, "external issuer")
	extDir := p.certDir(t, "external", issuer.Issue(t, testpki.LeafOptions{DNSNames: []string{"shop.example.com"}}))

	var reloads atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/-/reload" {
			reloads.Add(1)
		}
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)

	out := t.TempDir()
	sc := startSidecar(t, nil, "--cert-dir", meshDir, "--trust-bundle", p.caFile, "--external-cert-dir", extDir,
		"--app-cert-dir", out, "--app-cert-sources", "mesh,external", "--app-cert-formats", "pem,pkcs12",
		"--app-cert-reload", "http:"+u.Port()+"/-/reload")

	read := func(rel string) []byte {
		b, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read("mesh/tls.crt"), mustRead(t, filepath.Join(meshDir, "tls.crt"))) ||
		!bytes.Equal(read("external/tls.crt"), mustRead(t, filepath.Join(extDir, "tls.crt"))) {
		t.Fatal("delivered certificates differ from the served ones")
	}
	if !bytes.Equal(read("mesh/ca.crt"), p.ca.RootPEM()) {
		t.Fatal("mesh/ca.crt is not the trust bundle")
	}
	for _, f := range []string{"mesh/keystore.p12", "mesh/truststore.p12", "external/keystore.p12", "mesh/store.password"} {
		read(f)
	}
	if reloads.Load() != 0 {
		t.Fatalf("%d reloads before any change", reloads.Load())
	}
	code, body := sc.get("/app-certs")
	var st []struct {
		Source  string `json:"source"`
		Written bool   `json:"written"`
		Serial  string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || len(st) != 2 || !st[0].Written || !st[1].Written {
		t.Fatalf("/app-certs %d %s (%v)", code, body, err)
	}

	// A renewal of the mesh certificate (kubelet-style swap).
	renewed := p.serverLeaf(t)
	start := time.Now()
	testpki.KubeletWrite(t, meshDir, map[string][]byte{"tls.crt": renewed.ChainPEM, "tls.key": renewed.KeyPEM})
	poll.Eventually(t, 10*time.Second, "the renewed certificate in the app's files and one reload", func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(out, "mesh/tls.crt"))
		return bytes.Equal(b, renewed.ChainPEM) && reloads.Load() == 1, fmt.Sprintf("reloads %d", reloads.Load())
	})
	t.Logf("renewal reached the app's files and its reload endpoint in %v", time.Since(start).Round(time.Millisecond))
	if !bytes.Equal(read("external/tls.crt"), mustRead(t, filepath.Join(extDir, "tls.crt"))) {
		t.Fatal("external files changed with the mesh renewal")
	}

	// A corrupt renewal: the store refuses it (its failure counter moves),
	// and the app's files and reload count stay.
	failures := sc.counter(t, `podtls_sidecar_cert_reloads_total{cert="mesh",result="failure"}`)
	testpki.KubeletWrite(t, meshDir, map[string][]byte{"tls.crt": []byte("garbage"), "tls.key": renewed.KeyPEM})
	poll.Eventually(t, 15*time.Second, "the corrupt certificate to be refused", func() (bool, string) {
		return sc.counter(t, `podtls_sidecar_cert_reloads_total{cert="mesh",result="failure"}`) > failures, "not yet"
	})
	if !bytes.Equal(read("mesh/tls.crt"), renewed.ChainPEM) || reloads.Load() != 1 {
		t.Fatalf("corrupt renewal reached the app: reloads %d", reloads.Load())
	}
	if v := sc.counter(t, `podtls_sidecar_app_reloads_total{action="http",result="success"}`); v != 1 {
		t.Fatalf("reload metric %v", v)
	}
}

func TestNothingToDo(t *testing.T) {
	p := newPKI(t)
	s := launch(t, nil, "--cert-dir", p.certDir(t, "mesh", p.serverLeaf(t)))
	select {
	case err := <-s.done:
		s.done <- err
		if err == nil || !strings.Contains(s.stderr.String(), "nothing to do") {
			t.Fatalf("exit %v, log %s", err, s.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the sidecar started without a listener or app certificates")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
