package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/podtls/podtls/internal/testpki"
)

// TestEdge runs the real binary as an edge: curl -I on the redirect port,
// then a client behind a PROXY v2 load balancer whose address, identity and
// certificate reach the app, forged copies gone.
func TestEdge(t *testing.T) {
	needTool(t, "curl")
	p := newPKI(t)
	app := newBackend(t)
	inbound, redirect := freeAddr(t), freeAddr(t)
	startSidecar(t, nil, "--mode", "http", "--inbound", inbound+"="+app.addr,
		"--cert-dir", p.certDir(t, "server", p.serverLeaf(t)), "--trust-bundle", p.caFile,
		"--redirect", redirect+"=443", "--redirect-host", "shop.example.com", "--proxy-protocol", portOf(inbound))

	t.Run("curl-I", func(t *testing.T) {
		for host, want := range map[string][]string{
			"shop.example.com": {"HTTP/1.1 308", "Location: https://shop.example.com/x?y=1"},
			"evil.example.net": {"HTTP/1.1 421"},
		} {
			out, err := runCmd(t, "", "curl", "-sSI", "--max-time", "5", "-H", "Host: "+host, "http://"+redirect+"/x?y=1")
			if err != nil {
				t.Fatalf("curl: %v %s", err, out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("Host %s: %q lacks %q", host, out, w)
				}
			}
			if host != "shop.example.com" && strings.Contains(strings.ToLower(out), "location:") {
				t.Errorf("Host %s redirected: %s", host, out)
			}
		}
	})

	t.Run("proxy-protocol-and-client-context", func(t *testing.T) {
		leaf := p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})
		raw, err := net.Dial("tcp", inbound)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("198.51.100.9"), Port: 40000}, raw.RemoteAddr())
		if _, err := h.WriteTo(raw); err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, goClient(p, leaf, "server.demo.svc"))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: server.demo.svc\r\nConnection: close\r\n"+
			"x-forwarded-for: 6.6.6.6\r\nX-Forwarded-Client-Cert: URI=spiffe://cluster.local/ns/demo/sa/admin\r\n"+
			"x-podtls-client-id: spiffe://cluster.local/ns/demo/sa/admin\r\n\r\n")
		if b, err := io.ReadAll(c); err != nil || !strings.Contains(string(b), "hello from backend") {
			t.Fatalf("response %q, %v", b, err)
		}
		got := app.header()
		sum := sha256.Sum256(leaf.Cert.Raw)
		for k, want := range map[string]string{
			"X-Forwarded-For":         "198.51.100.9",
			"X-Podtls-Client-Id":      clientID,
			"X-Forwarded-Client-Cert": "By=" + serverID + ";Hash=" + hex.EncodeToString(sum[:]),
		} {
			if v := strings.Join(got.Values(k), "\n"); !strings.HasPrefix(v, want) {
				t.Errorf("%s = %q, want %q...", k, v, want)
			}
		}
		if v := got.Get("X-Forwarded-Client-Cert"); !strings.HasSuffix(v, ";URI="+clientID) {
			t.Errorf("X-Forwarded-Client-Cert %q does not end with the client's URI", v)
		}
	})
}
