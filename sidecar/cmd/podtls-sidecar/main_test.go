package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/testpki"
)

// TestInboundRealClients drives the inbound mTLS listener with curl, openssl
// s_client and Go, accepted and refused, and checks the app saw no byte of a
// refused connection.
func TestInboundRealClients(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr,
		"--cert-dir", p.certDir(t, "server", p.serverLeaf(t)), "--trust-bundle", p.caFile,
		"--allow", "spiffe://cluster.local/ns/demo/sa/client", "--allow", "spiffe://cluster.local/ns/ops/*")

	leaves := map[string]*testpki.Leaf{
		"good":        p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}),
		"prefix":      p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/ops/sa/debug"}),
		"other-ca":    p.other.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}),
		"expired":     p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID, NotBefore: time.Now().Add(-3 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}),
		"not-allowed": p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/intruder"}),
		"no-spiffe":   p.ca.Issue(t, testpki.LeafOptions{DNSNames: []string{"client.demo.svc"}}),
	}
	files := map[string][2]string{}
	for name, l := range leaves {
		c, k := p.clientFiles(t, name, l)
		files[name] = [2]string{c, k}
	}
	port := portOf(inbound)
	curl := func(t *testing.T, cert string) (string, error) {
		needTool(t, "curl")
		args := []string{"-sS", "--max-time", "5", "--cacert", p.caFile, "--resolve", "server.demo.svc:" + port + ":127.0.0.1"}
		if cert != "" {
			args = append(args, "--cert", files[cert][0], "--key", files[cert][1])
		}
		return runCmd(t, "", "curl", append(args, "https://server.demo.svc:"+port+"/")...)
	}
	openssl := func(t *testing.T, cert string) (string, error) {
		needTool(t, "openssl")
		args := []string{"s_client", "-connect", inbound, "-servername", "server.demo.svc", "-CAfile", p.caFile, "-verify_return_error", "-quiet", "-ign_eof"}
		if cert != "" {
			args = append(args, "-cert", files[cert][0], "-key", files[cert][1])
		}
		return runCmd(t, "GET / HTTP/1.0\r\nHost: server.demo.svc\r\n\r\n", "openssl", args...)
	}
	goc := func(t *testing.T, cert string) (string, error) {
		body, _, err := httpGet(context.Background(), inbound, goClient(p, leaves[cert], "server.demo.svc"))
		return body, err
	}
	clients := map[string]func(*testing.T, string) (string, error){"curl": curl, "openssl": openssl, "go": goc}

	cases := []struct {
		cert   string
		ok     bool
		reason string
	}{
		{"good", true, ""},
		{"prefix", true, ""},
		{"", false, "no_client_cert"},
		{"other-ca", false, "unknown_ca"},
		{"expired", false, "expired"},
		{"not-allowed", false, "identity_not_allowed"},
		{"no-spiffe", false, "no_spiffe_id"},
	}
	for _, client := range []string{"curl", "openssl", "go"} {
		for _, tc := range cases {
			name := tc.cert
			if name == "" {
				name = "no-cert"
			}
			t.Run(client+"/"+name, func(t *testing.T) {
				bytesBefore, connsBefore, accepted := app.bytes.Load(), app.conns.Load(), sc.counter(t, inboundTotal)
				out, err := clients[client](t, tc.cert)
				if tc.ok {
					if err != nil || !strings.Contains(out, "hello from backend") {
						t.Fatalf("want success, got err=%v out=%s", err, out)
					}
					return
				}
				if strings.Contains(out, "hello from backend") {
					t.Fatalf("refused client got a response: %s", out)
				}
				sc.waitHandled(t, accepted)
				if b, c := app.bytes.Load()-bytesBefore, app.conns.Load()-connsBefore; b != 0 || c != 0 {
					t.Fatalf("app received %d bytes on %d connections from a refused client", b, c)
				}
				if m := sc.metric(t, `podtls_sidecar_handshake_failures_total{direction="inbound",reason="`+tc.reason+`"}`); m == "" {
					t.Fatalf("no handshake failure with reason %s in metrics", tc.reason)
				}
			})
		}
	}
	sc.waitNoActive(t)
	if code, body := sc.get("/certs"); code != 200 || !strings.Contains(body, serverID) || strings.Contains(body, "PRIVATE") {
		t.Fatalf("/certs: %d %s", code, body)
	}
	if m := sc.metric(t, "podtls_sidecar_cert_expiry_seconds"); !strings.Contains(m, `cert="mesh"`) {
		t.Fatalf("expiry metric: %q", m)
	}
}

// TestOutboundToInbound sends plaintext through an outbound sidecar, mTLS
// between two sidecar processes, and plaintext to the app.
func TestOutboundToInbound(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	startSidecar(t, nil, "--inbound", inbound+"="+app.addr, "--cert-dir", p.certDir(t, "server", p.serverLeaf(t)),
		"--trust-bundle", p.caFile, "--allow", clientID)
	clientDir := p.certDir(t, "client", p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}))
	ok, pinned, wrongPin, wrongName := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	startSidecar(t, nil, "--cert-dir", clientDir, "--trust-bundle", p.caFile,
		"--outbound", ok+"=localhost:"+portOf(inbound),
		"--outbound", pinned+"=localhost:"+portOf(inbound)+"#"+serverID,
		"--outbound", wrongPin+"=localhost:"+portOf(inbound)+"#spiffe://cluster.local/ns/demo/sa/impostor",
		"--outbound", wrongName+"=127.0.0.1:"+portOf(inbound)) // the server certificate has no IP SAN
	get := func(addr string) (string, error) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			// A refused upstream resets the app's connection; on a loaded machine the
			// reset can land before the dial returns.
			return "", nil
		}
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "GET / HTTP/1.0\r\nHost: server.demo.svc\r\n\r\n")
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				return b.String(), nil
			}
		}
	}
	for _, tc := range []struct {
		name string
		addr string
		ok   bool
	}{{"plain", ok, true}, {"pinned", pinned, true}, {"wrong-pin", wrongPin, false}, {"wrong-name", wrongName, false}} {
		t.Run(tc.name, func(t *testing.T) {
			before := app.bytes.Load()
			out, err := get(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(out, "hello from backend"); got != tc.ok {
				t.Fatalf("success=%v, want %v: %q", got, tc.ok, out)
			}
			if !tc.ok && app.bytes.Load() != before {
				t.Fatal("app received bytes through a refused upstream")
			}
		})
	}
}

// TestSNIEdge serves an external certificate (wildcard, full chain) to
// clients without client certificates, while the mesh name still needs mTLS.
func TestSNIEdge(t *testing.T) {
	needTool(t, "curl")
	p := newPKI(t)
	app := newBackend(t)
	public := testpki.NewCA(t, "public root")
	inter := public.Intermediate(t, "public intermediate")
	ext := inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"*.example.com"}})
	extDir := p.certDir(t, "shop-tls", ext)
	publicRoot := p.write(t, "public.pem", public.RootPEM())
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr, "--cert-dir", p.certDir(t, "server", p.serverLeaf(t)),
		"--trust-bundle", p.caFile, "--external-cert-dir", extDir)
	port := portOf(inbound)
	out, err := runCmd(t, "", "curl", "-sS", "--max-time", "5", "--cacert", publicRoot,
		"--resolve", "shop.example.com:"+port+":127.0.0.1", "https://shop.example.com:"+port+"/")
	if err != nil || !strings.Contains(out, "hello from backend") {
		t.Fatalf("edge request: %v %s", err, out)
	}
	out, err = runCmd(t, "", "curl", "-sS", "--max-time", "5", "--cacert", p.caFile,
		"--resolve", "server.demo.svc:"+port+":127.0.0.1", "https://server.demo.svc:"+port+"/")
	if err == nil || strings.Contains(out, "hello from backend") {
		t.Fatalf("mesh name without client certificate succeeded: %s", out)
	}
	if _, body := sc.get("/certs"); !strings.Contains(body, "*.example.com") {
		t.Fatalf("/certs lacks the external certificate: %s", body)
	}
}

// TestBadStart: bad flags and bad files stop the process with a message
// naming the problem, before anything is served.
func TestBadStart(t *testing.T) {
	p := newPKI(t)
	good := p.certDir(t, "good", p.serverLeaf(t))
	garbage := p.certDir(t, "garbage", p.serverLeaf(t))
	testpki.KubeletWrite(t, garbage, map[string][]byte{"tls.crt": p.serverLeaf(t).ChainPEM, "tls.key": []byte("garbage")})
	otherCA := p.certDir(t, "other", p.other.Issue(t, testpki.LeafOptions{SPIFFEID: serverID}))
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no-listener", []string{"--cert-dir", good}, 2, "--inbound"},
		{"bad-inbound", []string{"--cert-dir", good, "--inbound", "8443"}, 2, "--inbound"},
		{"bad-outbound-listen", []string{"--cert-dir", good, "--outbound", "0.0.0.0:9001=a.b.svc:8443"}, 2, "loopback"},
		{"bad-allow", []string{"--cert-dir", good, "--inbound", ":18443=127.0.0.1:1", "--allow", "spiffe://x/*/y"}, 2, "--allow"},
		{"bad-mode", []string{"--cert-dir", good, "--inbound", ":18443=127.0.0.1:1", "--mode", "udp"}, 2, "--mode"},
		{"token-without-ca", []string{"--cert-dir", good, "--inbound", ":18443=127.0.0.1:1", "--token-file", "/x"}, 2, "--ca-url"},
		{"http-ca-url", []string{"--cert-dir", good, "--inbound", ":18443=127.0.0.1:1", "--ca-url", "http://ca", "--token-file", "/x"}, 2, "--ca-url"},
		{"listen-port-zero", []string{"--cert-dir", good, "--inbound", "127.0.0.1:0=127.0.0.1:1"}, 2, "port"},
		{"missing-files", []string{"--cert-dir", p.dir + "/nope", "--trust-bundle", p.caFile, "--inbound", "127.0.0.1:18443=127.0.0.1:1"}, 1, "tls.crt"},
		{"garbage-key", []string{"--cert-dir", garbage, "--trust-bundle", p.caFile, "--inbound", "127.0.0.1:18443=127.0.0.1:1"}, 1, "key"},
		{"untrusted", []string{"--cert-dir", otherCA, "--trust-bundle", p.caFile, "--inbound", "127.0.0.1:18443=127.0.0.1:1"}, 1, "trust bundle"},
		{"no-trust", []string{"--cert-dir", good, "--inbound", "127.0.0.1:18443=127.0.0.1:1"}, 1, "trust bundle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCmd(t, "", binary, append(tc.args, "--admin", freeAddr(t))...)
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != tc.code {
				t.Fatalf("exit %v, want code %d; output:\n%s", err, tc.code, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("message does not mention %q:\n%s", tc.want, out)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		out, err := runCmd(t, "", binary, "--help")
		if err != nil {
			t.Fatalf("--help: %v", err)
		}
		for _, f := range []string{"plaintext-check-interval", "inbound", "outbound", "cert-dir", "trust-bundle", "external-cert-dir", "ca-url", "discovery-url", "token-file", "dns-name", "cert-ttl", "allow", "trust-domain", "mode", "admin", "drain-timeout", "handshake-timeout", "idle-timeout", "dial-timeout", "max-connections", "poll-interval", "pq-key-exchange", "log-level", "alpn", "redirect", "redirect-host", "trusted-proxy", "proxy-protocol", "app-cert-dir", "app-cert-sources", "app-cert-formats", "app-cert-password-file", "app-cert-pkcs12", "app-cert-reload"} {
			if !strings.Contains(out, "-"+f) {
				t.Errorf("--help does not document --%s", f)
			}
		}
	})
}

// TestDependencies keeps the sidecar small: the standard library, fsnotify,
// protobuf's wire encoding (and its two internal helpers) for the gRPC probe, and
// podtls's standard-library-only packages (the discovery wire types among them), go-proxyproto for PROXY protocol v2
// on the edge (standard library only; 21 KB of symbols; +104 KiB stripped
// together with the redirect listener), go-pkcs12 and keystore-go (with
// x/crypto's pbkdf2) for app-owned PKCS#12 and JKS stores (+420 KiB
// stripped together with sidecar/appcerts), nothing controller-side
// (no grpc-go: +5.5 MB).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{"github.com/podtls/podtls/sidecar/", "github.com/podtls/podtls/identity", "github.com/podtls/podtls/contract", "github.com/podtls/podtls/tlsconfig", "github.com/podtls/podtls/renewal", "github.com/podtls/podtls/ca/signapi", "github.com/podtls/podtls/discovery/discoveryapi", "github.com/podtls/podtls/sidecarevents/eventsapi",
		"github.com/fsnotify/fsnotify", "golang.org/x/sys/", "github.com/pires/go-proxyproto",
		"software.sslmate.com/src/go-pkcs12", "github.com/pavlo-v-chernykh/keystore-go/v4", "golang.org/x/crypto/pbkdf2",
		"google.golang.org/protobuf/encoding/protowire", "google.golang.org/protobuf/internal/detrand", "google.golang.org/protobuf/internal/errors"}
	for _, pkg := range strings.Fields(string(out)) {
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(pkg, a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("podtls-sidecar depends on %s", pkg)
		}
	}
}
