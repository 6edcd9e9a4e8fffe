package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podtls/podtls/internal/testpki"
)

// TestCredentialBundle runs the binary on a kubelet podCertificate volume:
// one credentials.pem (PKCS#8 key, then the chain) and the roots beside it,
// swapped the kubelet's way. A mesh client gets through; a refreshed bundle
// is served without a restart.
func TestCredentialBundle(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	vol := filepath.Join(p.dir, "podtls-mesh")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(l *testpki.Leaf) {
		testpki.KubeletWrite(t, vol, map[string][]byte{
			"credentials.pem": append(append([]byte{}, l.KeyPEM...), l.ChainPEM...),
			"ca.crt":          p.ca.RootPEM(),
		})
	}
	first := p.serverLeaf(t)
	write(first)
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr,
		"--credential-bundle", filepath.Join(vol, "credentials.pem"), "--trust-bundle", filepath.Join(vol, "ca.crt"))
	client := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")
	if body, _, err := httpGet(context.Background(), inbound, client); err != nil || !strings.Contains(body, "hello from backend") {
		t.Fatalf("mesh request through a credential-bundle sidecar: %v %q", err, body)
	}
	next := p.serverLeaf(t)
	write(next)
	sc.waitLog(t, "mesh certificate loaded", `"serial":"`+next.Cert.SerialNumber.Text(16)+`"`)
	if _, body := sc.get("/certs"); !strings.Contains(body, next.Cert.SerialNumber.Text(16)) {
		t.Fatalf("/certs after the refresh: %s", body)
	}
}
