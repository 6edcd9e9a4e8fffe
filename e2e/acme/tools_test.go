package acme_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/internal/gobuild"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// opensslVerify checks a kubernetes.io/tls chain with the real openssl:
// the leaf against Pebble's current root, the rest of tls.crt as untrusted
// intermediates, for TLS server use and each host.
func opensslVerify(t *testing.T, roots, chain []byte, hosts []string) {
	t.Helper()
	blocks := pemBlocks(chain)
	if len(blocks) < 2 {
		t.Fatalf("tls.crt holds %d certificates, want leaf + intermediate (full chain)", len(blocks))
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile := write("root.pem", roots)
	leafFile := write("leaf.pem", pem.EncodeToMemory(blocks[0]))
	var rest []byte
	for _, b := range blocks[1:] {
		rest = append(rest, pem.EncodeToMemory(b)...)
	}
	interFile := write("intermediates.pem", rest)
	for _, h := range hosts {
		args := []string{"verify", "-CAfile", rootFile, "-untrusted", interFile, "-purpose", "sslserver"}
		if strings.HasPrefix(h, "*.") {
			// A wildcard certificate verifies for a name below it.
			h = "anything" + h[1:]
		}
		args = append(args, "-verify_hostname", h, leafFile)
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The same leaf must not verify against another root: the check can fail.
	other := write("other.pem", testpki.NewCA(t, "other root").RootPEM())
	if out, err := exec.Command("openssl", "verify", "-CAfile", other, "-untrusted", interFile, leafFile).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified the leaf against an unrelated root:\n%s", out)
	}
}

// sClientSerial connects with openssl s_client using SNI host, verifies the
// served chain against roots, and returns the leaf's serial (lower-case hex).
func sClientSerial(ctx context.Context, addr, host string, roots []byte) (string, error) {
	f, err := os.CreateTemp("", "podtls-roots-*.pem")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(roots); err != nil {
		return "", err
	}
	_ = f.Close()
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-servername", host,
		"-CAfile", f.Name(), "-verify_return_error", "-verify_hostname", host, "-showcerts")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("openssl s_client -servername %s: %w\n%s", host, err, out)
	}
	if !bytes.Contains(out, []byte("Verify return code: 0 (ok)")) {
		return "", fmt.Errorf("openssl s_client -servername %s: chain not verified:\n%s", host, out)
	}
	blocks := pemBlocks(out)
	if len(blocks) == 0 {
		return "", fmt.Errorf("openssl s_client: no certificate in output:\n%s", out)
	}
	leaf, err := x509.ParseCertificate(blocks[0].Bytes)
	if err != nil {
		return "", err
	}
	return serialHex(leaf), nil
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

func pemBlocks(b []byte) []*pem.Block {
	var out []*pem.Block
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, blk)
		}
	}
}

func leafOf(t *testing.T, chain []byte) *x509.Certificate {
	t.Helper()
	blocks := pemBlocks(chain)
	if len(blocks) == 0 {
		t.Fatal("no certificate in tls.crt")
	}
	c, err := x509.ParseCertificate(blocks[0].Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kubeletSync mirrors Secret ns/name into dir (as a Secret volume) until the
// test ends, polling every 50 ms; kubelet's own sync period is ~1 min.
func (s *suite) kubeletSync(t *testing.T, ns, name, dir string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		last := ""
		for ctx.Err() == nil {
			sec, err := s.kube.Clientset.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && sec.ResourceVersion != last {
				files := map[string][]byte{corev1.TLSCertKey: sec.Data[corev1.TLSCertKey], corev1.TLSPrivateKeyKey: sec.Data[corev1.TLSPrivateKeyKey]}
				if _, err := testpki.KubeletWriteE(dir, files); err == nil {
					last = sec.ResourceVersion
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

var (
	sidecarOnce sync.Once
	sidecarBin  string
	sidecarErr  error
	sidecarDir  string
)

// sidecarBinary builds ./sidecar/cmd/podtls-sidecar once per test binary.
func sidecarBinary(t *testing.T) string {
	t.Helper()
	sidecarOnce.Do(func() {
		sidecarDir, sidecarErr = os.MkdirTemp("", "podtls-acme-e2e-")
		if sidecarErr != nil {
			return
		}
		sidecarBin, sidecarErr = gobuild.Binary(context.Background(), ".", sidecarDir, "github.com/podtls/podtls/sidecar/cmd/podtls-sidecar")
	})
	if sidecarErr != nil {
		t.Fatal(sidecarErr)
	}
	return sidecarBin
}

func cleanupSidecarBuild() {
	if sidecarDir != "" {
		_ = os.RemoveAll(sidecarDir)
	}
}

// sidecar is a running podtls-sidecar.
type sidecar struct {
	cmd   *exec.Cmd
	admin string
	log   *bytes.Buffer
	mu    *sync.Mutex
	done  chan error
}

// startSidecar runs podtls-sidecar with an inbound listener in front of a
// tiny HTTP app, a mesh certificate from a throwaway CA, and extDir as
// --external-cert-dir; it waits for /readyz.
func startSidecar(t *testing.T, inbound, extDir string) *sidecar {
	t.Helper()
	bin := sidecarBinary(t)
	dir := t.TempDir()
	mesh := testpki.NewCA(t, "mesh test root")
	leaf := mesh.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/acme-renew/sa/default", DNSNames: []string{"shop.acme-renew.svc"}})
	meshDir := filepath.Join(dir, "mesh")
	testpki.KubeletWrite(t, meshDir, map[string][]byte{"tls.crt": leaf.ChainPEM, "tls.key": leaf.KeyPEM})
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, mesh.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	app := newApp(t)
	sc := &sidecar{admin: fmt.Sprintf("127.0.0.1:%d", poll.FreePort(t)), log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	sc.cmd = exec.Command(bin, "--inbound", inbound+"="+app, "--cert-dir", meshDir, "--trust-bundle", bundle,
		"--external-cert-dir", extDir, "--admin", sc.admin, "--log-level", "debug")
	sc.cmd.Stdout, sc.cmd.Stderr = lockedWriter{sc.mu, sc.log}, lockedWriter{sc.mu, sc.log}
	sc.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := sc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sc.done <- sc.cmd.Wait() }()
	t.Cleanup(func() {
		_ = sc.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-sc.done:
		case <-time.After(10 * time.Second):
			_ = sc.cmd.Process.Kill()
			<-sc.done
		}
		if t.Failed() {
			t.Logf("sidecar log:\n%s", sc.output())
		}
	})
	poll.Eventually(t, 15*time.Second, "sidecar /readyz", func() (bool, string) {
		select {
		case err := <-sc.done:
			sc.done <- err
			t.Fatalf("sidecar exited: %v\n%s", err, sc.output())
		default:
		}
		c := http.Client{Timeout: time.Second}
		resp, err := c.Get("http://" + sc.admin + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return sc
}

// pid of the sidecar, to prove it was not restarted.
func (sc *sidecar) pid() int { return sc.cmd.Process.Pid }

func (sc *sidecar) running() bool {
	select {
	case err := <-sc.done:
		sc.done <- err
		return false
	default:
		return true
	}
}

func (sc *sidecar) output() string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// newApp serves "hello" over plain HTTP on loopback: the app behind the sidecar.
func newApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "hello") }),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
