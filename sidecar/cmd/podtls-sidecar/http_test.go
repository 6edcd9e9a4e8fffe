package main

import (
	"crypto/tls"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/podtls/podtls/internal/testpki"
)

// TestHTTPMode: h2 and HTTP/1.1 by ALPN, forwarding headers set by the
// sidecar, and the verified identity header replacing any forged copy.
func TestHTTPMode(t *testing.T) {
	needTool(t, "curl")
	p := newPKI(t)
	app := newBackend(t)
	public := testpki.NewCA(t, "public root")
	inter := public.Intermediate(t, "public intermediate")
	extDir := p.certDir(t, "edge", inter.Issue(t, testpki.LeafOptions{DNSNames: []string{"shop.example.com"}}))
	publicRoot := p.write(t, "public.pem", public.RootPEM())
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--mode", "http", "--inbound", inbound+"="+app.addr, "--cert-dir", p.certDir(t, "server", p.serverLeaf(t)),
		"--trust-bundle", p.caFile, "--external-cert-dir", extDir)
	cert, key := p.clientFiles(t, "client", p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}))
	port := portOf(inbound)
	forged := []string{"-H", "X-Podtls-Client-Id: spiffe://cluster.local/ns/demo/sa/admin", "-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Forwarded-Proto: gopher"}
	for _, tc := range []struct {
		name, version, host, ca string
		mtls                    bool
		wantID                  string
	}{
		{"mesh-h2", "--http2", "server.demo.svc", p.caFile, true, clientID},
		{"mesh-http1.1", "--http1.1", "server.demo.svc", p.caFile, true, clientID},
		{"edge-h2", "--http2", "shop.example.com", publicRoot, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-sS", "--max-time", "5", tc.version, "-w", "\nproto=%{http_version}", "--cacert", tc.ca,
				"--resolve", tc.host + ":" + port + ":127.0.0.1"}
			if tc.mtls {
				args = append(args, "--cert", cert, "--key", key)
			}
			args = append(append(args, forged...), "https://"+tc.host+":"+port+"/")
			out, err := runCmd(t, "", "curl", args...)
			if err != nil || !strings.Contains(out, "hello from backend") {
				t.Fatalf("curl: %v %s", err, out)
			}
			wantProto := "proto=2"
			if tc.version == "--http1.1" {
				wantProto = "proto=1.1"
			}
			if !strings.Contains(out, wantProto) {
				t.Errorf("negotiated %q, want %s", out, wantProto)
			}
			h := app.header()
			if got := h.Values("X-Podtls-Client-Id"); strings.Join(got, ",") != tc.wantID {
				t.Errorf("X-Podtls-Client-Id %q, want %q", got, tc.wantID)
			}
			if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q", got)
			}
			if got := h.Get("X-Forwarded-Proto"); got != "https" {
				t.Errorf("X-Forwarded-Proto %q", got)
			}
			if got := h.Get("X-Forwarded-Host"); got != tc.host+":"+port {
				t.Errorf("X-Forwarded-Host %q", got)
			}
		})
	}
	t.Run("refused-no-bytes", func(t *testing.T) {
		before, accepted := app.bytes.Load(), sc.counter(t, inboundTotal)
		out, err := runCmd(t, "", "curl", "-sS", "--max-time", "5", "--cacert", p.caFile, "--resolve", "server.demo.svc:"+port+":127.0.0.1", "https://server.demo.svc:"+port+"/")
		if err == nil || strings.Contains(out, "hello") {
			t.Fatalf("no client certificate accepted: %s", out)
		}
		sc.waitHandled(t, accepted)
		if app.bytes.Load() != before {
			t.Fatal("app received bytes from a refused client")
		}
	})
	sc.waitNoActive(t)
}

// TestIdleRSS reports the resident memory of an idle sidecar and guards
// against regressions such as pulling in a heavy dependency.
func TestIdleRSS(t *testing.T) {
	p := newPKI(t)
	sc := startSidecar(t, nil, "--inbound", freeAddr(t)+"=127.0.0.1:1", "--outbound", freeAddr(t)+"=localhost:1",
		"--cert-dir", p.certDir(t, "server", p.serverLeaf(t)), "--trust-bundle", p.caFile)
	sc.waitLog(t, `"msg":"serving"`) // the last step of the start-up
	status, err := os.ReadFile("/proc/" + strconv.Itoa(sc.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			t.Logf("idle RSS: %.1f MB", float64(kb)/1024)
			if kb > 20*1024 {
				t.Fatalf("idle RSS %d kB is far above the 10 MB target", kb)
			}
			return
		}
	}
	t.Fatal("VmRSS not found")
}

// TestALPNInTCPMode: without --alpn nothing is negotiated; with --alpn h2 a
// client asking for h2 gets it (gRPC clients insist on it).
func TestALPNInTCPMode(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	dir := p.certDir(t, "server", p.serverLeaf(t))
	cfg := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")
	cfg.NextProtos = []string{"h2", "http/1.1"}
	for _, tc := range []struct {
		args []string
		want string
	}{{nil, ""}, {[]string{"--alpn", "h2"}, "h2"}} {
		inbound := freeAddr(t)
		startSidecar(t, nil, append([]string{"--inbound", inbound + "=" + app.addr, "--cert-dir", dir, "--trust-bundle", p.caFile}, tc.args...)...)
		c, err := tls.Dial("tcp", inbound, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("%v: negotiated %q, want %q", tc.args, got, tc.want)
		}
		c.Close()
	}
}
