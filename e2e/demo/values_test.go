package demo

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podtls/podtls/e2e/mesh"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/gobuild"
)

// TestChartValues renders the chart with the values the demo installs it with, so a
// chart or schema change that breaks `make demo` fails here in seconds, without the
// node. It needs helm (hack/helm.sh).
func TestChartValues(t *testing.T) {
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm := filepath.Join(root, "bin", "tools", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Skipf("helm not built (hack/helm.sh): %v", err)
	}
	env := &acmetest.Env{DirectoryURL: "https://10.250.0.2:14000/dir", DNSAddr: "10.250.0.2:15353", TSIGKeyName: "acme-key", TSIGAlgorithm: "hmac-sha256"}
	for _, tc := range []struct {
		name string
		acme *acmetest.Env
		want []string
	}{
		{"mesh only", nil, []string{"image: localhost/podtls/controller:demo", "--sidecar-image=localhost/podtls/sidecar:demo", "imagePullPolicy: Never"}},
		{"with ACME", env, []string{"--acme-config=", "directoryURL: https://10.250.0.2:14000/dir", "RFC2136_NAMESERVER: 10.250.0.2:15353", "profile: default", "minBackoff: 5s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values, err := json.Marshal(chartValues(tc.acme))
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "values.json")
			if err := os.WriteFile(file, values, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(helm, "template", "podtls", filepath.Join(root, "charts", "podtls"), "-n", systemNS, "-f", file,
				"--kube-version", mesh.KubeVersion())
			home := t.TempDir()
			cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("rendered chart lacks %q", w)
				}
			}
		})
	}
}

func TestLastError(t *testing.T) {
	for _, tc := range []struct{ name, logs, want string }{
		{"empty", "", ""},
		{"no error", `{"level":"INFO","msg":"serving"}`, ""},
		{"retry then give up", `{"msg":"retrying","attempt":1,"err":"EOF"}` + "\n" +
			`{"msg":"hop failed","err":"get http://127.0.0.1:9001/: connection reset by peer (after 2 attempts)"}` + "\n",
			"get http://127.0.0.1:9001/: connection reset by peer (after 2 attempts)"},
		{"last line not JSON", `{"msg":"retrying","err":"EOF"}` + "\nsegfault\n", "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lastError(tc.logs); got != tc.want {
				t.Errorf("lastError = %q, want %q", got, tc.want)
			}
		})
	}
}
