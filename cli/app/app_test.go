package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/podtls/podtls/contract"
)

func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(args, IO{In: strings.NewReader(stdin), Out: &out, Err: &errOut})
	return out.String(), errOut.String(), code
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {podtls.io/inbound: "8443:8080"}
    spec:
      containers: [{name: app, image: web:1}]
`

func TestInjectUninject(t *testing.T) {
	// Without namespace labels only opt-in pods are injected.
	out, stderr, code := run(t, deployment, "podtls", "inject", "-f", "-")
	if code != 0 || out != deployment || !strings.Contains(stderr, "deployment/web unchanged (not-enabled)") {
		t.Fatalf("exit %d, stderr %q, out changed: %v", code, stderr, out != deployment)
	}
	out, stderr, code = run(t, deployment, "podtls", "inject", "-f", "-", "--namespace-enabled",
		"--sidecar-image", "reg.example/sidecar:v9", "--sidecar-mode", "legacy")
	if code != 0 || !strings.Contains(stderr, "deployment/web injected (namespace-enabled") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers
	if len(c) != 2 || c[0].Name != contract.ContainerName || c[0].Image != "reg.example/sidecar:v9" {
		t.Fatalf("containers %+v", c)
	}
	back, _, code := run(t, out, "podtls", "uninject", "-q", "-f", "-")
	if code != 0 {
		t.Fatalf("uninject exit %d", code)
	}
	var orig, got appsv1.Deployment
	_ = yaml.Unmarshal([]byte(deployment), &orig)
	if err := yaml.UnmarshalStrict([]byte(back), &got); err != nil {
		t.Fatal(err)
	}
	ob, _ := yaml.Marshal(orig)
	gb, _ := yaml.Marshal(got)
	if !bytes.Equal(ob, gb) {
		t.Errorf("uninject(inject(d)) != d:\n%s\nvs\n%s", ob, gb)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"podtls", "inject"},                        // no -f
		{"podtls", "inject", "-f", "/no/such/file"}, // unreadable
		{"podtls", "check", "-o", "yaml"},           // bad output
		{"podtls", "no-such-command"},               // unknown command
		{"podtls", "inject", "-f", "-", "--sidecar-mode", "sideways"},
	} {
		_, stderr, code := run(t, deployment, args...)
		if code != 2 || !strings.HasPrefix(stderr, "Error: ") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

func TestCheckUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	cfg := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n" +
		"users: [{name: u, user: {token: x}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, "", "podtls", "check", "--kubeconfig", path)
	if code != 2 || out != "" || !strings.Contains(stderr, "cannot reach the API server https://127.0.0.1:1") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestHelpNamesAndWidth(t *testing.T) {
	for _, name := range []string{"podtls", "/usr/local/bin/kubectl-podtls"} {
		want := "podtls status"
		if strings.Contains(name, "kubectl") {
			want = "kubectl podtls status"
		}
		for _, cmd := range []string{"", "check", "status", "inject", "uninject", "version"} {
			args := []string{name, "--help"}
			if cmd != "" {
				args = []string{name, cmd, "--help"}
			}
			out, _, code := run(t, "", args...)
			if code != 0 {
				t.Fatalf("%v: exit %d", args, code)
			}
			for _, l := range strings.Split(out, "\n") {
				if utf8.RuneCountInString(l) > 80 {
					t.Errorf("%v: line of %d columns: %q", args, utf8.RuneCountInString(l), l)
				}
			}
			if cmd == "status" && !strings.Contains(out, want) {
				t.Errorf("%s status --help lacks %q", name, want)
			}
		}
	}
	out, _, code := run(t, "", "podtls", "version", "--short")
	if code != 0 || strings.TrimSpace(out) == "" {
		t.Errorf("version --short: exit %d %q", code, out)
	}
}
