package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// binary is the real podtls-sidecar, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podtls-sidecar-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "podtls-sidecar")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build podtls-sidecar: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	serverID = "spiffe://cluster.local/ns/demo/sa/server"
	clientID = "spiffe://cluster.local/ns/demo/sa/client"
)

// pki is the set of certificates one test uses, written to files.
type pki struct {
	ca, other *testpki.CA
	dir       string
	caFile    string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: testpki.NewCA(t, "mesh root"), other: testpki.NewCA(t, "other root"), dir: t.TempDir()}
	p.caFile = p.write(t, "ca.pem", p.ca.RootPEM())
	return p
}

func (p *pki) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// certDir writes a kubelet-style cert dir for leaf and returns its path.
func (p *pki) certDir(t *testing.T, name string, l *testpki.Leaf) string {
	t.Helper()
	d := filepath.Join(p.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	testpki.KubeletWrite(t, d, map[string][]byte{"tls.crt": l.ChainPEM, "tls.key": l.KeyPEM})
	return d
}

// clientFiles writes a leaf as cert and key files for curl and openssl.
func (p *pki) clientFiles(t *testing.T, name string, l *testpki.Leaf) (certFile, keyFile string) {
	t.Helper()
	return p.write(t, name+".crt", l.ChainPEM), p.write(t, name+".key", l.KeyPEM)
}

func (p *pki) serverLeaf(t *testing.T) *testpki.Leaf {
	return p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: serverID, DNSNames: []string{"server.demo.svc", "localhost"}})
}

// backend is the app behind the sidecar: HTTP that counts every byte and
// connection it receives, so tests can prove a refused client reached nothing.
type backend struct {
	addr  string
	bytes atomic.Int64
	conns atomic.Int64
	mu    sync.Mutex
	last  http.Header
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.last = r.Header.Clone()
		b.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "hello from backend %s\n", r.Header.Get("X-Podtls-Client-Id"))
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(&countingListener{Listener: ln, b: b})
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *backend) header() http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

type countingListener struct {
	net.Listener
	b *backend
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.b.conns.Add(1)
		c = &countingConn{Conn: c, b: l.b}
	}
	return c, err
}

type countingConn struct {
	net.Conn
	b *backend
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.b.bytes.Add(int64(n))
	return n, err
}

// handedOut are the addresses freeAddr returned: the kernel may offer a port again
// once its probe listener is closed, before the sidecar binds it (seen under load: two
// listeners of one test got the same port).
var handedOut sync.Map

// freeAddr is a loopback address no other caller in this process got.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
	t.Fatal("no free loopback port in 100 tries")
	return ""
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// sidecar is a running podtls-sidecar process.
type sidecar struct {
	cmd    *exec.Cmd
	admin  string
	stderr *syncBuffer
	stdout *syncBuffer // the access log
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSidecar runs the binary with args plus --admin and waits for /readyz.
func startSidecar(t *testing.T, env []string, args ...string) *sidecar {
	t.Helper()
	s := launch(t, env, args...)
	s.waitReady(t)
	return s
}

// launch runs the binary with args plus --admin.
func launch(t *testing.T, env []string, args ...string) *sidecar {
	t.Helper()
	s := &sidecar{admin: freeAddr(t), stderr: &syncBuffer{}, stdout: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(binary, append(args, "--admin", s.admin, "--log-level", "debug")...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stderr = s.stderr
	s.cmd.Stdout = s.stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("sidecar %v log:\n%s", args, s.stderr.String())
		}
	})
	return s
}

func (s *sidecar) waitReady(t *testing.T) {
	t.Helper()
	poll.Eventually(t, 15*time.Second, "the sidecar to be ready", func() (bool, string) {
		s.failIfExited(t)
		code, body := s.get("/readyz")
		return code == http.StatusOK, fmt.Sprintf("/readyz %d %s\n%s", code, body, s.stderr.String())
	})
}

// failIfExited fails t at once if the process has exited.
func (s *sidecar) failIfExited(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("sidecar exited early: %v\n%s", err, s.stderr.String())
	default:
	}
}

// waitLog waits until the sidecar has logged a line containing every part.
func (s *sidecar) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	poll.Eventually(t, 15*time.Second, fmt.Sprintf("a log line with %q", parts), func() (bool, string) {
		for line := range strings.Lines(s.stderr.String()) {
			found := true
			for _, p := range parts {
				found = found && strings.Contains(line, p)
			}
			if found {
				return true, ""
			}
		}
		s.failIfExited(t)
		return false, "not logged yet"
	})
}

func (s *sidecar) get(path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *sidecar) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Errorf("sidecar did not stop on SIGTERM")
	}
}

// counter is the sum of the values of the metric lines starting with prefix
// (0 when there are none).
func (s *sidecar) counter(t *testing.T, prefix string) float64 {
	t.Helper()
	var sum float64
	for line := range strings.Lines(s.metric(t, prefix)) {
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// inboundTotal is the number of inbound connections the sidecar accepted.
const inboundTotal = `podtls_sidecar_connections_total{direction="inbound"}`

// waitHandled waits until the sidecar has accepted more inbound
// connections than before and closed every one of them: whatever it was
// going to do with a refused client (such as dial the app) is done.
func (s *sidecar) waitHandled(t *testing.T, before float64) {
	t.Helper()
	poll.Eventually(t, 15*time.Second, "the sidecar to handle and close the connection", func() (bool, string) {
		total, active := s.counter(t, inboundTotal), s.counter(t, `podtls_sidecar_connections_active{direction="inbound"}`)
		return total > before && active == 0, fmt.Sprintf("%v inbound connections accepted (%v before), %v open", total, before, active)
	})
}

func (s *sidecar) metric(t *testing.T, prefix string) string {
	t.Helper()
	_, body := s.get("/metrics")
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// goClient returns a TLS config trusting the mesh root and presenting leaf.
func goClient(p *pki, leaf *testpki.Leaf, serverName string) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	c := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if leaf != nil {
		c.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}}
	}
	return c
}

// httpGet performs one HTTP/1.1 request on a fresh TLS connection and
// returns the body and the server's leaf serial.
func httpGet(ctx context.Context, addr string, cfg *tls.Config) (string, string, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	serial := tc.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: test\r\n\r\n"); err != nil {
		return "", serial, err
	}
	b, err := io.ReadAll(c)
	return string(b), serial, err
}

func runCmd(t *testing.T, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		// make test (PODTLS_REQUIRE_ENVTEST) and CI must not pass by skipping.
		if os.Getenv("CI") != "" || os.Getenv("PODTLS_REQUIRE_TOOLS") != "" || os.Getenv("PODTLS_REQUIRE_ENVTEST") != "" {
			t.Fatalf("%s not installed (apt-get install %s)", name, name)
		}
		t.Skipf("%s not installed (apt-get install %s)", name, name)
	}
}

// waitNoActive waits until the sidecar counts no open connections, proving
// that every connection, refused or served, was accounted and closed.
func (s *sidecar) waitNoActive(t *testing.T) {
	t.Helper()
	poll.Eventually(t, 3*time.Second, "no open connections", func() (bool, string) {
		m := s.metric(t, "podtls_sidecar_connections_active{")
		return !strings.Contains(m, "} ") || allZero(m), "connections still open: " + m
	})
}

func allZero(m string) bool {
	for _, line := range strings.Split(m, "\n") {
		if !strings.HasSuffix(line, " 0") {
			return false
		}
	}
	return true
}
