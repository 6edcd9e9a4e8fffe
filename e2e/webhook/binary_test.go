package webhook_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/gobuild"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

// TestBinary runs the real podtls-controller binary against the API server with
// --kubeconfig, as a user would outside a cluster: it must become ready, log
// JSON without any PEM material, and exit 0 on SIGTERM.
func TestBinary(t *testing.T) {
	env := kubetest.Start(t)
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := gobuild.Binary(t.Context(), root, t.TempDir(), "./controller/cmd/podtls-controller")
	if err != nil {
		t.Fatal(err)
	}

	help, _ := exec.Command(bin, "--help").CombinedOutput()
	for _, f := range []string{"-kubeconfig", "-webhook-url", "-leader-elect", "-sidecar-image"} {
		if !strings.Contains(string(help), f) {
			t.Errorf("--help does not list %s", f)
		}
	}

	env.CreateNamespace(t, "podtls-system", nil)
	mwc := webhookconfig.MutatingWebhookConfiguration(webhookconfig.DefaultOptions())
	if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(t.Context(), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	whPort, caPort, healthPort, metricsPort := poll.FreePort(t), poll.FreePort(t), poll.FreePort(t), poll.FreePort(t)
	cmd := exec.Command(bin,
		"--kubeconfig", env.KubeconfigPath,
		"--webhook-addr", fmt.Sprintf("127.0.0.1:%d", whPort),
		"--webhook-url", fmt.Sprintf("https://127.0.0.1:%d", whPort),
		"--ca-addr", fmt.Sprintf("127.0.0.1:%d", caPort),
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", healthPort),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--leader-elect",
		"--log-level", "debug",
		"--shutdown-timeout", "5s",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	poll.Eventually(t, time.Minute, "readyz of the binary", func() (bool, string) {
		select {
		case err := <-exited:
			t.Fatalf("controller exited early: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK, string(b)
	})

	// An admission through the binary's webhook shows up in its metrics.
	env.CreateNamespace(t, "bin-labelled", map[string]string{contract.Inject: contract.NamespaceEnabled})
	poll.Eventually(t, time.Minute, "admission", func() (bool, string) {
		p, err := env.Clientset.CoreV1().Pods("bin-labelled").Create(t.Context(), pod("bin-labelled", "app",
			map[string]string{contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
		if err != nil {
			return false, err.Error()
		}
		return sidecars(p) == 1, "not injected"
	})
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`podtls_webhook_admissions_total{reason="namespace-enabled",result="injected"} 1`,
		"podtls_webhook_admission_duration_seconds_bucket",
		"podtls_pods_not_injected 0",
		// The CA server registers in the same registry: alerting on the
		// intermediate's expiry needs this gauge.
		"podtls_ca_intermediate_not_after_timestamp_seconds",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
		t.Logf("exited 0 in %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM\n%s", logs.String())
	}

	out := logs.String()
	if strings.Contains(out, "BEGIN") {
		t.Error("logs contain PEM material")
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("log line is not JSON: %s", sc.Text())
		}
	}
}
