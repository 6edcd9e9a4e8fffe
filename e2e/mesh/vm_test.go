package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
	"github.com/podtls/podtls/sidecar/certs"
)

const (
	vmNS       = "legacy"
	vmName     = "billing"
	vmIP       = "10.250.0.100"
	vmID       = "spiffe://cluster.local/ns/legacy/sa/billing"
	caNodePort = "30443"
)

// TestVMWorkload runs a "VM" (a network namespace on the cluster's LAN, outside every
// node) with podinfo behind podtls-sidecar: registered with podtls workload register, it
// joins the mesh with a one-time token, a pod calls it by Service name over mTLS (and
// only that pod's identity is admitted), it calls a pod through its outbound listener,
// it renews by mTLS without the token, the token cannot be used twice, and deleting the
// registration makes the next renewal fail with a clear error.
func TestVMWorkload(t *testing.T) {
	cluster.Require(t, "VM workloads")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := gobuild.Binaries(ctx, root, bin, "./sidecar/cmd/podtls-sidecar", "./cli/cmd/podtls"); err != nil {
		t.Fatal(err)
	}
	if err := gobuild.Binaries(ctx, filepath.Join(root, thirdPartyModule), bin, podinfoPkg); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Options{Images: buildImages(ctx, t, root), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, c)
		}
	})
	cs := c.Client
	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 1,
		Values: map[string]any{"ca": map[string]any{"external": map[string]any{
			"enabled": true, "type": "NodePort", "nodePort": caNodePort, "names": []string{cluster.NodeIP}}}}}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)
	podtls := func(args ...string) string {
		t.Helper()
		out, err := c.Exec(ctx, filepath.Join(bin, "podtls"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	for _, args := range [][]string{{"create", "namespace", ns}, {"label", "namespace", ns, "podtls.io/inject=enabled"}, {"create", "namespace", vmNS}} {
		if _, err := c.RunKubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}

	// Register: the token goes to a file on the machine, as an admin would copy it.
	vm, err := c.AddMachine(ctx, "vm", vmIP)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "join.token")
	podtls("-n", vmNS, "workload", "register", vmName, "--service-account", vmName, "--address", vmIP, "--port", "https=8443", "--token-file", tokenFile)
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	// The machine trusts the CA's roots it was given out of band (the trust bundle).
	roots := waitTrustBundle(ctx, t, c, ns)
	rootsFile := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(rootsFile, roots, 0o644); err != nil {
		t.Fatal(err)
	}
	// A pod the machine calls, allowing the machine's identity only.
	ledger(ctx, t, cs)
	undoDNS, err := vm.UseClusterDNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(undoDNS)

	logDir := t.TempDir() // not beside the files the sidecar watches
	start := func(name string, cmd *exec.Cmd) {
		t.Helper()
		logf, err := os.Create(filepath.Join(logDir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s log:\n%s", name, tail(string(b), 3000))
			}
		})
	}
	start("podinfo", vm.Command(ctx, filepath.Join(bin, "podinfo"), "--host", "127.0.0.1", "--port", "9898", "--port-metrics", "0", "--grpc-port", "0"))
	certDir := filepath.Join(dir, "certs")
	t0 := time.Now()
	start("sidecar", vm.Command(ctx, filepath.Join(bin, "podtls-sidecar"), "--workload",
		"--ca-url", "https://"+cluster.NodeIP+":"+caNodePort, "--token-file", tokenFile, "--dns-name", vmName+"."+vmNS+".svc", "--cert-dir", certDir, "--trust-bundle", rootsFile,
		"--inbound", ":8443=127.0.0.1:9898/http1", "--allow", "spiffe://cluster.local/ns/demo/sa/caller",
		"--outbound", "127.0.0.1:9001=ledger.demo.svc:8443#spiffe://cluster.local/ns/demo/sa/ledger",
		"--admin", "127.0.0.1:15000"))
	admin := func(method, path string) (int, string) {
		t.Helper()
		out, err := vm.Command(ctx, "curl", "-sS", "-X", method, "-w", "\n%{http_code}", "http://127.0.0.1:15000"+path).Output()
		if err != nil {
			return 0, err.Error()
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndex(s, "\n")
		var code int
		fmt.Sscan(s[i+1:], &code)
		return code, s[:max(i, 0)]
	}
	waitFor(ctx, t, time.Minute, "the machine's sidecar ready (joined)", func() bool { code, _ := admin("GET", "/readyz"); return code == 200 })
	t.Logf("machine joined and ready in %s", time.Since(t0).Round(time.Millisecond))
	first := leafOf(t, certDir)
	if got := first.URIs[0].String(); got != vmID {
		t.Fatalf("machine's identity %s, want %s", got, vmID)
	}
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Fatalf("the used join token is still on disk: %v", err)
	}
	checkModes(t, certDir)
	if code, metrics := admin("GET", "/metrics"); code != 200 || !strings.Contains(metrics, `podtls_sidecar_agent_sign_requests_total{result="success"} 1`) {
		t.Fatalf("machine's /metrics: %d %s", code, tail(metrics, 500))
	}

	// A pod calls the machine by Service name; another identity is refused.
	for _, tc := range []struct {
		sa   string
		want corev1.PodPhase
	}{{"caller", corev1.PodSucceeded}, {"intruder", corev1.PodFailed}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "to-vm-" + tc.sa, Annotations: map[string]string{contract.Upstreams: vmName + "." + vmNS + ".svc:8443@9001#" + vmID}},
			Spec: corev1.PodSpec{ServiceAccountName: tc.sa, RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To[int64](5),
				Containers: []corev1.Container{{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever, Args: []string{"get", "-timeout", "20s", "http://127.0.0.1:9001/version"}}}}}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: tc.sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got := runPod(ctx, t, cs, pod, time.Minute)
		logs := logsOf(ctx, cs, pod.Name, "app")
		if got.Status.Phase != tc.want || (tc.want == corev1.PodSucceeded && !strings.Contains(logs, "version")) {
			t.Fatalf("pod as %s calling the machine: %s, logs %q", tc.sa, got.Status.Phase, tail(logs, 500))
		}
		t.Logf("pod as %s -> %s.%s.svc (the machine): %s %s", tc.sa, vmName, vmNS, got.Status.Phase, strings.TrimSpace(tail(logs, 120)))
	}

	// The machine calls a pod through its outbound listener.
	var body []byte
	waitFor(ctx, t, time.Minute, "the machine reaching ledger.demo.svc through its outbound listener", func() bool {
		body, err = vm.Command(ctx, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9001/").Output()
		return err == nil && len(body) > 0
	})
	t.Logf("machine -> ledger.demo.svc: %s", strings.TrimSpace(string(body)))

	// Renewal by mTLS, without the join token (removed after the join).
	if code, out := admin("POST", "/renew"); code != 200 {
		t.Fatalf("renewal by mTLS: %d %s", code, out)
	}
	second := leafOf(t, certDir)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("renewal returned the same certificate")
	}
	t.Logf("renewed by mTLS: serial %x -> %x", first.SerialNumber, second.SerialNumber)
	list := podtls("-n", vmNS, "workload", "list")
	if !strings.Contains(list, "renewal") || !strings.Contains(list, vmIP) || !strings.Contains(list, "used") {
		t.Fatalf("podtls workload list:\n%s", list)
	}
	t.Logf("podtls workload list:\n%s", list)

	// The join token cannot be used twice.
	code, answer := postJoin(ctx, t, c, rootsFile, string(token))
	spent := strings.Contains(answer, "has been invalidated") || strings.Contains(answer, "the token was used")
	if code != http.StatusForbidden || !spent || strings.Contains(answer, strings.TrimSpace(string(token))) {
		t.Fatalf("replayed join token: %d %s", code, answer)
	}
	t.Logf("replayed join token: %d %s", code, strings.TrimSpace(answer))

	// Deleting the registration stops renewals, with a clear error.
	podtls("-n", vmNS, "workload", "delete", vmName)
	var out string
	// The admin endpoint allows one forced renewal per 10 s: ask until it tries.
	waitFor(ctx, t, time.Minute, "a forced renewal attempt", func() bool {
		code, out = admin("POST", "/renew")
		return code != http.StatusTooManyRequests
	})
	if code == 200 || !strings.Contains(out, "register the machine again") {
		t.Fatalf("renewal after the registration was deleted: %d %s", code, out)
	}
	t.Logf("renewal after delete: %d %s", code, out)
	if leafOf(t, certDir).SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatal("the certificate changed after a refused renewal")
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitTrustBundle returns the trust bundle ConfigMap's roots in namespace.
func waitTrustBundle(ctx context.Context, t *testing.T, c *cluster.Cluster, namespace string) []byte {
	t.Helper()
	var roots string
	waitFor(ctx, t, time.Minute, "trust bundle in "+namespace, func() bool {
		cm, err := c.Client.CoreV1().ConfigMaps(namespace).Get(ctx, contract.TrustBundleConfigMap, metav1.GetOptions{})
		if err == nil {
			roots = cm.Data[contract.TrustBundleKey]
		}
		return roots != ""
	})
	return []byte(roots)
}

// ledger runs a pod in demo serving on 8443 through its sidecar, allowing the machine's
// identity only, behind Service ledger.
func ledger(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "ledger"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ledger", Labels: map[string]string{"app": "ledger"},
		Annotations: map[string]string{contract.Inbound: "8443:8080", contract.Allow: vmID}},
		Spec: corev1.PodSpec{ServiceAccountName: "ledger", Containers: []corev1.Container{{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever,
			Args: []string{"serve", "-addr", "127.0.0.1:8080"}}}}}
	// The webhook may not answer yet right after the install: retry the creation.
	waitFor(ctx, t, time.Minute, "pod ledger admitted", func() bool {
		_, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err == nil
	})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ledger"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "ledger"},
		Ports: []corev1.ServicePort{{Name: "https", Port: 8443, TargetPort: intstr.FromInt32(8443)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 2*time.Minute, "pod ledger ready", func() bool {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "ledger", metav1.GetOptions{})
		return err == nil && podReady(p)
	})
}

// leafOf reads the machine's current leaf.
func leafOf(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf
}

// checkModes: the key is 0600, the directory not readable by others.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	key, err := os.Stat(filepath.Join(dir, certs.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if m := key.Mode().Perm(); m != 0o600 {
		t.Fatalf("key mode %o, want 600", m)
	}
	d, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := d.Mode().Perm(); m != 0o700 {
		t.Fatalf("certificate directory mode %o, want 700", m)
	}
}

// postJoin replays a join token from the machine's network, as curl would.
func postJoin(ctx context.Context, t *testing.T, c *cluster.Cluster, rootsFile, token string) (int, string) {
	t.Helper()
	roots := x509.NewCertPool()
	pem, _ := os.ReadFile(rootsFile)
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	body, _ := json.Marshal(signapi.SignRequest{CSR: "-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+cluster.NodeIP+":"+caNodePort+signapi.JoinPath, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
