// Package cli_test runs the real podtls binary against a real kube-apiserver
// (envtest) with the real controller in-process: check goes red with a hint
// for each failure it names and green after the fix, inject's offline output
// equals what the webhook stores, and status --live reads a real
// podtls-sidecar's /certs through the API server's pod proxy.
//
// Run: go test ./e2e/cli (needs bin/k8s from make envtest-assets; skipped
// without it unless PODTLS_REQUIRE_ENVTEST=1).
package cli_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	acmestatus "github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/check"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/cli/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/internal/gobuild"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testctl"
	"github.com/podtls/podtls/webhook/inject"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

const ctrlNS = "podtls-system"

func TestMain(m *testing.M) {
	controller.SetupLogging("info")
	os.Exit(m.Run())
}

func TestCLI(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	bins := build(t, "./cli/cmd/podtls", "./sidecar/cmd/podtls-sidecar")
	cli := &runner{bin: bins[0], kubeconfig: env.KubeconfigPath}

	env.CreateNamespace(t, ctrlNS, nil)
	testctl.CreateWebhookConfiguration(t, env.Clientset)
	opts := testctl.Options(t, ctrlNS)
	opts.SidecarImage = "localhost/podtls/sidecar:e2e"
	whURL := opts.WebhookURL
	ctl := testctl.Start(t, env.Config, opts)
	// The Deployment a chart would create, with the same arguments, and one
	// pod made Ready the way a kubelet would report it.
	createControllerDeployment(t, env, []string{"--namespace", ctrlNS, "--webhook-url", whURL,
		"--sidecar-image", opts.SidecarImage, "--trust-domain", opts.TrustDomain})

	caSec, err := env.Clientset.CoreV1().Secrets(ctrlNS).Get(ctx, opts.CASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mat, err := ca.MaterialFromSecret(caSec)
	if err != nil {
		t.Fatal(err)
	}
	roots := mat.TrustBundlePEM()

	const appNS = "shop"
	env.CreateNamespace(t, appNS, map[string]string{contract.Inject: contract.NamespaceEnabled})
	waitBundle(t, env, appNS)

	t.Run("version and help", func(t *testing.T) {
		out, code := cli.run(t, nil, "version")
		if code != 0 || !strings.HasPrefix(out, "podtls client ") {
			t.Errorf("version: exit %d, %q", code, out)
		}
		for _, cmd := range []string{"check", "status", "inject", "uninject"} {
			out, code := cli.run(t, nil, cmd, "--help")
			if code != 0 || !strings.Contains(out, "Examples:") {
				t.Errorf("%s --help: exit %d, no examples", cmd, code)
			}
			assertFits(t, cmd+" --help", out)
		}
		out, code = cli.run(t, nil, "completion", "bash")
		if code != 0 || !strings.Contains(out, "__start_podtls") {
			t.Errorf("completion bash: exit %d", code)
		}
	})

	t.Run("runs as a kubectl plugin", func(t *testing.T) {
		dir := t.TempDir()
		plugin := filepath.Join(dir, "kubectl-podtls")
		if err := os.Symlink(cli.bin, plugin); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, env.KubectlPath, "podtls", "status", "--help")
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "kubectl podtls status -n demo") {
			t.Errorf("kubectl podtls status --help: %v\n%s", err, out)
		}
		cmd = exec.CommandContext(ctx, env.KubectlPath, "podtls", "check", "-o", "json", "--kubeconfig", env.KubeconfigPath)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err = cmd.Output()
		var rep check.Report
		if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil || rep.Schema != check.SchemaVersion {
			t.Errorf("kubectl podtls check: %v %v\n%s", err, jerr, out)
		}
	})

	t.Run("check is green on a healthy install", func(t *testing.T) {
		rep := cli.checkJSON(t, 0)
		for _, c := range rep.Checks {
			if c.Level == output.Fail || c.Level == output.Warn {
				t.Errorf("%s: %s %s", c.ID, c.Level, c.Message)
			}
		}
		if lvl := level(rep, check.IDWebhookServingCert); lvl != output.OK {
			t.Errorf("serving certificate: %s, want ok (dialled by URL)", lvl)
		}
		out, code := cli.run(t, nil, "check")
		if code != 0 || strings.Contains(out, "\x1b[") {
			t.Errorf("check: exit %d, colour codes without a TTY:\n%s", code, out)
		}
		assertFits(t, "check", out)
		t.Logf("healthy check:\n%s", out)
	})

	t.Run("colour on a terminal only, never with NO_COLOR", func(t *testing.T) {
		script, err := exec.LookPath("script")
		if err != nil {
			t.Skip("util-linux script (to run podtls on a pseudo-terminal) not installed")
		}
		for _, tc := range []struct {
			noColor bool
			want    bool
		}{{false, true}, {true, false}} {
			cmd := exec.CommandContext(ctx, script, "-qec", cli.bin+" check --kubeconfig "+env.KubeconfigPath, "/dev/null")
			cmd.Env = append(os.Environ(), "TERM=xterm")
			if tc.noColor {
				cmd.Env = append(cmd.Env, "NO_COLOR=1")
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("podtls check on a pty (NO_COLOR=%v): %v\n%s", tc.noColor, err, out)
			}
			if got := bytes.Contains(out, []byte("\x1b[32m[ok]")); got != tc.want {
				t.Errorf("NO_COLOR=%v: colour %v, want %v:\n%q", tc.noColor, got, tc.want, out)
			}
		}
	})

	podYAML := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: %s
  annotations:
    podtls.io/inbound: "8443:8080"
    podtls.io/upstreams: "db.shop.svc:5432@9001"
    podtls.io/allow: "spiffe://cluster.local/ns/shop/sa/frontend"
    podtls.io/external-hosts: "shop.example.com"
    podtls.io/access-log: "true"
spec:
  containers:
  - name: app
    image: example.com/web:1
`, appNS)

	t.Run("inject output equals what the webhook stores", func(t *testing.T) {
		var want corev1.Pod
		if err := yaml.UnmarshalStrict([]byte(podYAML), &want); err != nil {
			t.Fatal(err)
		}
		stored, err := env.Clientset.CoreV1().Pods(appNS).Create(ctx, &want, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !inject.HasSidecar(stored) {
			t.Fatal("webhook did not inject")
		}
		out, code := cli.run(t, strings.NewReader(podYAML), "inject", "-q", "-f", "-", "--from-cluster")
		if code != 0 {
			t.Fatalf("inject: exit %d", code)
		}
		var offline corev1.Pod
		if err := yaml.UnmarshalStrict([]byte(out), &offline); err != nil {
			t.Fatalf("inject output: %v\n%s", err, out)
		}
		// Defaulted by the same API server (dry run): the webhook sees the
		// sidecar and leaves the pod alone.
		offline.Name = "web-offline"
		dry, err := env.Clientset.CoreV1().Pods(appNS).Create(ctx, &offline, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		a, b := normalize(stored), normalize(dry)
		if d := diff(a, b); d != "" {
			t.Errorf("offline inject differs from the webhook's pod:\n%s", d)
		}
		if stored.Annotations[contract.Status] != dry.Annotations[contract.Status] {
			t.Errorf("status annotation: webhook %s, offline %s", stored.Annotations[contract.Status], dry.Annotations[contract.Status])
		}

		// uninject reverses it exactly.
		back, code := cli.run(t, strings.NewReader(out), "uninject", "-q", "-f", "-")
		if code != 0 {
			t.Fatalf("uninject: exit %d", code)
		}
		var orig, got corev1.Pod
		_ = yaml.Unmarshal([]byte(podYAML), &orig)
		if err := yaml.UnmarshalStrict([]byte(back), &got); err != nil {
			t.Fatal(err)
		}
		if d := diff(orig, got); d != "" {
			t.Errorf("uninject(inject(p)) != p:\n%s", d)
		}
	})

	t.Run("inject equals the webhook on every golden case", func(t *testing.T) {
		goldenCases(t, env, cli)
	})

	t.Run("status shows identity and the live mesh certificate", func(t *testing.T) {
		ip := hostIP(t)
		leaf := emulateKubelet(t, env, bins[1], mat, appNS, "web", ip, roots)
		out, code := cli.run(t, nil, "status", "-n", appNS, "web", "--live")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s", code, out)
		}
		t.Logf("status:\n%s", out)
		assertFits(t, "status", out)
		for _, want := range []string{"injected (namespace-enabled)", "spiffe://cluster.local/ns/shop/sa/default",
			"serial " + leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339),
			"127.0.0.1:9001 -> db.shop.svc:5432", "spiffe://cluster.local/ns/shop/sa/frontend"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q", want)
			}
		}
		js, code := cli.run(t, nil, "status", "-n", appNS, "-o", "json", "--live")
		if code != 0 {
			t.Fatalf("status json: exit %d", code)
		}
		var rep status.Report
		if err := json.Unmarshal([]byte(js), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Schema != status.SchemaVersion || len(rep.Pods) != 1 {
			t.Fatalf("json: %+v", rep)
		}
		p := rep.Pods[0]
		if !p.Injected || p.Identity != "spiffe://cluster.local/ns/shop/sa/default" || p.Live == nil || p.Live.Mesh == nil ||
			p.Live.Mesh.Serial != leaf.SerialNumber.Text(16) || !p.Live.Mesh.NotAfter.Equal(leaf.NotAfter.UTC()) {
			t.Errorf("json pod: %+v live %+v", p, p.Live)
		}
		// Shell completion of POD asks the cluster.
		comp, err := exec.CommandContext(ctx, cli.bin, "__complete", "status", "--kubeconfig", cli.kubeconfig, "-n", appNS, "w").Output()
		if err != nil || !strings.HasPrefix(string(comp), "web\n") {
			t.Errorf("completion of POD: %v %q", err, comp)
		}
		table, code := cli.run(t, nil, "status", "-n", appNS, "--live")
		if code != 0 || !strings.Contains(table, "web") || !strings.Contains(table, "h left") {
			t.Errorf("status table: exit %d\n%s", code, table)
		}
		assertFits(t, "status table", table)
	})

	t.Run("external certificate failing to renew", func(t *testing.T) {
		web, err := env.Clientset.CoreV1().Pods(appNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		name := web.Annotations[contract.ExternalSecret]
		if name == "" {
			t.Fatal("webhook wrote no external-secret annotation")
		}
		now := time.Now().UTC().Truncate(time.Second)
		ext := acmestatus.External{Hosts: []string{"shop.example.com"}, Directory: "https://acme.example/dir",
			CertIssuer: "CN=Pebble Intermediate-CA 1a2b", Serial: "0badc0de", NotBefore: now.Add(-60 * 24 * time.Hour),
			NotAfter: now.Add(30 * 24 * time.Hour), RenewAt: now.Add(-time.Minute), LastAttempt: now,
			LastError: "acme: error 400 urn:ietf:params:acme:error:dns: NXDOMAIN looking up TXT", Failures: 4,
			NextAttempt: now.Add(time.Hour)}
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS, Annotations: ext.Encode(nil),
				Labels: map[string]string{contract.ManagedByLabel: contract.ManagedByValue, contract.ComponentLabel: acmestatus.ComponentExternalCert}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: {}, corev1.TLSPrivateKeyKey: {}},
		}
		if _, err := env.Clientset.CoreV1().Secrets(appNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cli.expectRed(t, check.IDExternalCerts, "shop/"+name+": 4 failures: acme: error 400", "podtls.io/force-renew")
		out, code := cli.run(t, nil, "status", "-n", appNS, "web")
		if code != 0 {
			t.Fatalf("status: exit %d", code)
		}
		flat := strings.Join(strings.Fields(out), " ")
		for _, want := range []string{"External: shop.example.com", "issuer CN=Pebble Intermediate-CA 1a2b", "serial 0badc0de",
			"last error (4 failures): acme: error 400", "known only to the sidecar: use --live"} {
			if !strings.Contains(flat, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
		// Renewed: the manager clears the error and moves renew-at.
		ext.LastError, ext.Failures, ext.NextAttempt = "", 0, time.Time{}
		ext.RenewAt, ext.LastSuccess = now.Add(20*24*time.Hour), now
		sec, err = env.Clientset.CoreV1().Secrets(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Annotations = ext.Encode(sec.Annotations)
		if _, err := env.Clientset.CoreV1().Secrets(appNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		cli.expectGreen(t)
	})

	// The failures below are made with the controller stopped, as it would
	// otherwise repair them within seconds.
	if err := ctl.Stop(); err != nil {
		t.Errorf("controller.Run: %v", err)
	}

	t.Run("webhook configuration deleted", func(t *testing.T) {
		if err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, "podtls", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		cli.expectRed(t, check.IDWebhookConfig, "MutatingWebhookConfiguration podtls not found", "helm upgrade --install")
		fixed := webhookconfig.MutatingWebhookConfiguration(webhookconfig.Options{Name: "podtls", Namespace: ctrlNS, URL: whURL, CABundle: roots})
		if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, fixed, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cli.expectGreen(t)
	})

	t.Run("uninjected pod in a labelled namespace", func(t *testing.T) {
		// Admitted without the webhook: the configuration is briefly gone.
		mwcs := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations()
		saved, err := mwcs.Get(ctx, "podtls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := mwcs.Delete(ctx, "podtls", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		restored := false
		restore := func() {
			if restored {
				return
			}
			restored = true
			saved.ResourceVersion = ""
			if _, err := mwcs.Create(ctx, saved, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		defer restore() // the later subtests need the configuration back even if this one fails
		var p corev1.Pod
		_ = yaml.Unmarshal([]byte(podYAML), &p)
		p.Name = "slipped"
		// The API server notices the deleted configuration a moment later; until
		// then the (stopped) webhook refuses the pod.
		poll.Eventually(t, 30*time.Second, "pod admitted without the deleted webhook", func() (bool, string) {
			if _, err := env.Clientset.CoreV1().Pods(appNS).Create(ctx, p.DeepCopy(), metav1.CreateOptions{}); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		restore()
		cli.expectRed(t, check.IDUninjectedPods, "shop/slipped: namespace-enabled", "recreate them")
		out, _ := cli.run(t, nil, "status", "-n", appNS)
		if !strings.Contains(out, "MISSING") {
			t.Errorf("status table does not flag the pod:\n%s", out)
		}
		if err := env.Clientset.CoreV1().Pods(appNS).Delete(ctx, "slipped", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		cli.expectGreen(t)
	})

	t.Run("labelled namespace without its trust bundle", func(t *testing.T) {
		env.CreateNamespace(t, "bare", map[string]string{contract.Inject: contract.NamespaceEnabled})
		cli.expectRed(t, check.IDTrustBundles, "bare: missing", "distributor")
		if _, err := env.Clientset.CoreV1().ConfigMaps("bare").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: contract.TrustBundleConfigMap, Namespace: "bare"},
			Data:       map[string]string{contract.TrustBundleKey: string(roots)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cli.expectGreen(t)
	})

	t.Run("CA intermediate expiring soon", func(t *testing.T) {
		secrets := env.Clientset.CoreV1().Secrets(ctrlNS)
		orig, err := secrets.Get(ctx, opts.CASecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			left  time.Duration
			level output.Level
		}{{5 * 24 * time.Hour, output.Fail}, {20 * 24 * time.Hour, output.Warn}} {
			m, err := ca.MaterialFromSecret(orig)
			if err != nil {
				t.Fatal(err)
			}
			// Same root, an intermediate issued so that it expires in tc.left.
			if err := m.RenewIntermediate(time.Now().Add(tc.left-ca.IntermediateLifetime), ca.Backdate); err != nil {
				t.Fatal(err)
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(m.Key)
			if err != nil {
				t.Fatal(err)
			}
			sec := orig.DeepCopy()
			sec.Data[ca.KeyCert] = m.ChainPEM()
			sec.Data[ca.KeyKey] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
			if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			want := 1
			if tc.level == output.Warn {
				want = 0 // warnings do not fail
			}
			rep := cli.checkJSON(t, want)
			if got := level(rep, check.IDCAIntermediate); got != tc.level {
				t.Errorf("intermediate with %s left: %s, want %s", tc.left, got, tc.level)
			}
			out, _ := cli.run(t, nil, "check")
			if !strings.Contains(out, "CA intermediate") || !strings.Contains(out, "hint: restart the controller") {
				t.Errorf("check output lacks the intermediate line or its hint:\n%s", out)
			}
			orig, _ = secrets.Get(ctx, opts.CASecret, metav1.GetOptions{})
		}
		// The fix the hint names: a restarted controller renews it.
		opts.WebhookURL = whURL
		testctl.Start(t, env.Config, opts)
		cli.expectGreen(t)
	})
}

// runner runs the podtls binary.
type runner struct{ bin, kubeconfig string }

func (r *runner) run(t *testing.T, stdin *strings.Reader, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), r.bin, append(args, "--kubeconfig", r.kubeconfig)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), 0
	case errors.As(err, &exit):
		if exit.ExitCode() != 1 {
			t.Logf("podtls %v: exit %d, stderr:\n%s", args, exit.ExitCode(), stderr.String())
		}
		return stdout.String(), exit.ExitCode()
	default:
		t.Fatalf("podtls %v: %v", args, err)
		return "", -1
	}
}

func (r *runner) checkJSON(t *testing.T, wantExit int) check.Report {
	t.Helper()
	out, code := r.run(t, nil, "check", "-o", "json")
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check -o json: %v\n%s", err, out)
	}
	if code != wantExit || rep.Schema != check.SchemaVersion {
		t.Errorf("check -o json: exit %d (want %d), schema %q\n%s", code, wantExit, rep.Schema, out)
	}
	return rep
}

// expectRed: check exits 1, the check id fails, and the text output names
// the object and the hint.
func (r *runner) expectRed(t *testing.T, id, object, hint string) {
	t.Helper()
	rep := r.checkJSON(t, 1)
	if got := level(rep, id); got != output.Fail {
		t.Errorf("%s: %s, want fail", id, got)
	}
	out, code := r.run(t, nil, "check")
	if code != 1 {
		t.Errorf("check: exit %d, want 1", code)
	}
	if !strings.Contains(out, "[FAIL]") || !strings.Contains(out, object) || !strings.Contains(out, "hint: ") || !strings.Contains(strings.Join(strings.Fields(out), " "), hint) {
		t.Errorf("check output lacks FAIL/%q/hint %q:\n%s", object, hint, out)
	}
	assertFits(t, "check", out)
	t.Logf("check:\n%s", out)
}

// expectGreen: nothing fails (a stopped controller's webhook is skipped).
func (r *runner) expectGreen(t *testing.T) {
	t.Helper()
	rep := r.checkJSON(t, 0)
	for _, c := range rep.Checks {
		if c.Level == output.Fail {
			t.Errorf("still failing: %s: %s %v", c.ID, c.Message, c.Objects)
		}
	}
}

func level(rep check.Report, id string) output.Level {
	for _, c := range rep.Checks {
		if c.ID == id {
			return c.Level
		}
	}
	return "absent"
}

func assertFits(t *testing.T, what, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if n := len([]rune(l)); n > output.Width {
			t.Errorf("%s: line of %d columns: %q", what, n, l)
		}
	}
}

func build(t *testing.T, pkgs ...string) []string {
	t.Helper()
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := gobuild.Binaries(t.Context(), root, dir, pkgs...); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pkgs {
		out = append(out, filepath.Join(dir, filepath.Base(p)))
	}
	return out
}

func createControllerDeployment(t *testing.T, env *kubetest.Env, args []string) {
	t.Helper()
	ctx := t.Context()
	labels := map[string]string{"app.kubernetes.io/name": "podtls-controller"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "podtls-controller", Namespace: ctrlNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "controller", Image: "localhost/podtls/controller:" + options.Version, Args: args}}},
			},
		},
	}
	if _, err := env.Clientset.AppsV1().Deployments(ctrlNS).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "podtls-controller-0", Namespace: ctrlNS, Labels: labels},
		Spec:       d.Spec.Template.Spec,
	}
	p, err := env.Clientset.CoreV1().Pods(ctrlNS).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.10",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	if _, err := env.Clientset.CoreV1().Pods(ctrlNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitBundle(t *testing.T, env *kubetest.Env, ns string) {
	t.Helper()
	poll.Eventually(t, time.Minute, "trust bundle in "+ns, func() (bool, string) {
		_, err := env.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), contract.TrustBundleConfigMap, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
}

// hostIP is a non-loopback IPv4 address of this machine: the API server
// refuses to proxy to loopback and link-local pod IPs.
func hostIP(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP
		}
	}
	if os.Getenv(kubetest.RequireEnv) != "" {
		t.Fatal("no non-loopback IPv4 address for the emulated pod IP")
	}
	t.Skip("no non-loopback IPv4 address for the emulated pod IP (the API server does not proxy to loopback)")
	return nil
}

// emulateKubelet does what a kubelet would for pod ns/name: runs the real
// podtls-sidecar with a mesh certificate from the CA, its admin server on
// the pod IP, and reports the pod Running and Ready with that IP.
func emulateKubelet(t *testing.T, env *kubetest.Env, sidecarBin string, mat *ca.Material, ns, name string, ip net.IP, roots []byte) *x509.Certificate {
	t.Helper()
	ctx := t.Context()
	pod, err := env.Clientset.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := pod.Spec.ServiceAccountName
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse(fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa))
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		URIs: []*url.URL{id}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, mat.Intermediate, &key.PublicKey, mat.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), mat.ChainPEM()...)
	for file, data := range map[string][]byte{
		filepath.Join(certDir, "tls.crt"): chain,
		filepath.Join(certDir, "tls.key"): pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		filepath.Join(dir, "ca.crt"):      roots,
	} {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	admin := net.JoinHostPort(ip.String(), fmt.Sprint(contract.AdminPort))
	var logs bytes.Buffer
	cmd := exec.Command(sidecarBin, "--cert-dir", certDir, "--trust-bundle", filepath.Join(dir, "ca.crt"),
		"--inbound", fmt.Sprintf("127.0.0.1:%d=127.0.0.1:%d", poll.FreePort(t), poll.FreePort(t)), "--admin", admin)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sidecar log:\n%s", logs.String())
		}
	})
	poll.Eventually(t, time.Minute, "sidecar readyz on "+admin, func() (bool, string) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	var statuses []corev1.ContainerStatus
	for _, c := range pod.Spec.Containers {
		statuses = append(statuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}})
	}
	var initStatuses []corev1.ContainerStatus
	for _, c := range pod.Spec.InitContainers {
		initStatuses = append(initStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}})
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}},
		HostIP: ip.String(), StartTime: ptr.To(metav1.Now()), ContainerStatuses: statuses, InitContainerStatuses: initStatuses,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	if _, err := env.Clientset.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// normalize drops what differs between any two admissions of the same pod:
// the name, the service-account token volume's random suffix, and metadata
// the API server assigns.
func normalize(p *corev1.Pod) corev1.Pod {
	q := p.DeepCopy()
	q.ObjectMeta = metav1.ObjectMeta{Annotations: q.Annotations, Namespace: q.Namespace}
	q.Status = corev1.PodStatus{}
	isToken := func(name string) bool { return strings.HasPrefix(name, "kube-api-access-") }
	var vols []corev1.Volume
	for _, v := range q.Spec.Volumes {
		if !isToken(v.Name) {
			vols = append(vols, v)
		}
	}
	q.Spec.Volumes = vols
	for _, cs := range [][]corev1.Container{q.Spec.InitContainers, q.Spec.Containers} {
		for i := range cs {
			var ms []corev1.VolumeMount
			for _, m := range cs[i].VolumeMounts {
				if !isToken(m.Name) {
					ms = append(ms, m)
				}
			}
			cs[i].VolumeMounts = ms
		}
	}
	return *q
}

func diff(a, b any) string {
	ja, _ := yaml.Marshal(a)
	jb, _ := yaml.Marshal(b)
	if bytes.Equal(ja, jb) {
		return ""
	}
	la, lb := strings.Split(string(ja), "\n"), strings.Split(string(jb), "\n")
	var out []string
	for i := 0; i < max(len(la), len(lb)); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n  webhook: %s\n  offline: %s", i+1, x, y))
		}
		if len(out) > 10 {
			break
		}
	}
	return strings.Join(out, "\n")
}

// goldenCases runs every webhook/inject golden input through the real webhook
// (a dry-run create) and through `podtls inject --from-cluster`, then creates
// the offline pod the same way: both stored pods must be equal, or both refused.
func goldenCases(t *testing.T, env *kubetest.Env, cli *runner) {
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	inputs, err := filepath.Glob(filepath.Join(root, "webhook", "inject", "testdata", "*.pod.yaml"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	ctx := t.Context()
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	compared := 0
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".pod.yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			docs := strings.Split(string(raw), "\n---\n")
			var ns *corev1.Namespace
			if len(docs) == 2 {
				ns = &corev1.Namespace{}
				if err := yaml.Unmarshal([]byte(docs[0]), ns); err != nil {
					t.Fatal(err)
				}
				docs = docs[1:]
			}
			pod := &corev1.Pod{}
			if err := yaml.Unmarshal([]byte(docs[0]), pod); err != nil {
				t.Fatal(err)
			}
			// One namespace per case (labels differ between cases), except
			// the namespaces whose name is the point of the case.
			nsName := pod.Namespace
			if ns != nil {
				nsName = ns.Name
			}
			if nsName != ctrlNS && !slices.Contains(contract.SystemNamespaces, nsName) {
				nsName = "g-" + name
			}
			if ns != nil {
				ns.Name = nsName
			}
			pod.Namespace, pod.Name = nsName, name
			if _, err := env.Clientset.CoreV1().Namespaces().Get(ctx, nsName, metav1.GetOptions{}); err != nil {
				var labels map[string]string
				if ns != nil {
					labels = ns.Labels
				}
				env.CreateNamespace(t, nsName, labels)
			}
			if sa := pod.Spec.ServiceAccountName; sa != "" || nsName != ctrlNS {
				if sa == "" {
					sa = "default"
				}
				_, err := env.Clientset.CoreV1().ServiceAccounts(nsName).Create(ctx,
					&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
			}
			if v := pod.Annotations[contract.AppCertPassword]; v != "" {
				// The stores' password Secret exists, as the webhook requires
				// (podtls inject, offline, cannot check it).
				name, key := contract.PasswordRef(v)
				_, err := env.Clientset.CoreV1().Secrets(nsName).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
					StringData: map[string]string{key: "golden-password"}}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
			}
			var input bytes.Buffer
			if ns != nil {
				ns.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}
				b, _ := yaml.Marshal(ns)
				input.Write(b)
				input.WriteString("---\n")
			}
			pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
			b, _ := yaml.Marshal(pod)
			input.Write(b)

			byWebhook, werr := env.Clientset.CoreV1().Pods(nsName).Create(ctx, pod.DeepCopy(), dry)
			out, code := cli.run(t, strings.NewReader(input.String()), "inject", "-q", "-f", "-", "--from-cluster")
			if werr != nil {
				if strings.Contains(werr.Error(), "admission webhook") {
					if code == 0 {
						t.Errorf("webhook refused (%v) but inject succeeded", werr)
					}
					return
				}
				t.Skipf("the API server refuses the input itself: %v", werr)
			}
			if code != 0 {
				t.Fatalf("webhook admitted the pod, inject failed (exit %d)", code)
			}
			outDocs := yamlDocs(t, out)
			offline := &corev1.Pod{}
			if err := yaml.UnmarshalStrict(outDocs[len(outDocs)-1], offline); err != nil {
				t.Fatalf("inject output: %v\n%s", err, out)
			}
			stored, err := env.Clientset.CoreV1().Pods(nsName).Create(ctx, offline, dry)
			if err != nil {
				t.Fatalf("create the offline pod: %v", err)
			}
			if d := diff(normalize(byWebhook), normalize(stored)); d != "" {
				t.Errorf("offline inject differs from the webhook:\n%s", d)
			}
			compared++
		})
	}
	if compared < len(inputs)/2 {
		t.Errorf("only %d of %d cases compared", compared, len(inputs))
	}
}

// yamlDocs splits a YAML stream the way kubectl does.
func yamlDocs(t *testing.T, s string) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
}
