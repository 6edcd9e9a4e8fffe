package webhook_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
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

// drainDelay is the binary's --shutdown-delay here: long enough to check the draining
// state on a loaded machine.
const drainDelay = 4 * time.Second

// TestBinary runs the real podtls-controller binary against the API server with
// --kubeconfig, as a user would outside a cluster: it must become ready, log
// JSON without any PEM material, and exit 0 on SIGTERM after draining.
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
		"--shutdown-delay", drainDelay.String(),
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

	// SIGTERM: the controller drains for --shutdown-delay (not ready, still admitting,
	// closing each webhook connection after its response), then exits 0.
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, drainDelay, "readyz failing while draining", func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode != http.StatusOK, string(b)
	})
	p, err := env.Clientset.CoreV1().Pods("bin-labelled").Create(t.Context(), pod("bin-labelled", "app-draining",
		map[string]string{contract.Inbound: "8443:8080"}), metav1.CreateOptions{})
	if err != nil || sidecars(p) != 1 {
		t.Errorf("admission while draining: err %v, injected %v", err, err == nil && sidecars(p) == 1)
	}
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // only the Connection header matters here
	resp, err = insecure.Post(fmt.Sprintf("https://127.0.0.1:%d%s", whPort, webhookconfig.PathLabelled), "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Errorf("webhook while draining: %v", err)
	} else {
		resp.Body.Close()
		if !resp.Close {
			t.Errorf("webhook response while draining keeps the connection open (headers %v)", resp.Header)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
		if took := time.Since(start); took < drainDelay {
			t.Errorf("exited %s after SIGTERM, before the %s shutdown delay", took.Round(time.Millisecond), drainDelay)
		}
		t.Logf("exited 0 in %s after SIGTERM (shutdown delay %s)", time.Since(start).Round(time.Millisecond), drainDelay)
	case <-time.After(20*time.Second + drainDelay):
		t.Fatalf("no exit within 20s of the shutdown delay's end\n%s", logs.String())
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
