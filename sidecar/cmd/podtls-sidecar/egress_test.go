package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/testpki"
)

// TestEgressSystemRoots: a tls:// outbound reaches a service outside the
// mesh with TLS verified against the system roots (here a test root given
// through SSL_CERT_FILE, as on any Linux host) and no client certificate;
// the same server as a mesh upstream fails (unknown_ca), and an http-mode
// app hears why.
func TestEgressSystemRoots(t *testing.T) {
	p := newPKI(t)
	public := testpki.NewCA(t, "public web root")
	leaf := public.Issue(t, testpki.LeafOptions{DNSNames: []string{"localhost"}})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
		ClientAuth:   tls.RequestClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello public, client certificates: %d\n", len(r.TLS.PeerCertificates))
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	upstream := "localhost:" + portOf(ln.Addr().String())

	egress, mesh := freeAddr(t), freeAddr(t)
	sc := startSidecar(t, []string{"SSL_CERT_FILE=" + p.write(t, "public-roots.pem", public.RootPEM()), "SSL_CERT_DIR=" + t.TempDir()},
		"--cert-dir", p.certDir(t, "client", p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})), "--trust-bundle", p.caFile,
		"--mode", "http",
		"--outbound", egress+"=tls://"+upstream,
		"--outbound", mesh+"="+upstream)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	get := func(addr string) (int, http.Header, string) {
		t.Helper()
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("GET via %s: %v", addr, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	if code, _, body := get(egress); code != http.StatusOK || !strings.Contains(body, "hello public, client certificates: 0") {
		t.Fatalf("tls:// upstream: %d %q", code, body)
	}
	code, h, body := get(mesh)
	if code != http.StatusBadGateway || h.Get("X-Podtls-Error") != "tls_unknown_ca" || !strings.Contains(body, upstream) {
		t.Fatalf("mesh upstream with a public certificate: %d %v %q; want 502 tls_unknown_ca naming %s", code, h, body, upstream)
	}
	if m := sc.metric(t, "podtls_sidecar_outbound_failures_total"); !strings.Contains(m, `reason="tls_unknown_ca"`) {
		t.Fatalf("failure not counted: %s", m)
	}
	// Nothing else on the machine may use the egress port's TLS: it is loopback only.
	if host, _, _ := net.SplitHostPort(egress); host != "127.0.0.1" {
		t.Fatalf("egress listens on %s", egress)
	}
}
