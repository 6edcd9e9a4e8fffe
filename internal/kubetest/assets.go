package kubetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/podtls/podtls/internal/gobuild"
)

func missingAssets(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("kubetest: %v\n%s is set, so this is an error: run `make envtest-assets` (hack/k8s-binaries.sh) to build them", err, RequireEnv)
	}
	t.Skipf("kubetest: %v; run `make envtest-assets` to build them (set %s=1 to fail instead of skipping)", err, RequireEnv)
}

// AssetsDir returns the directory with etcd, kube-apiserver and kubectl: $KUBEBUILDER_ASSETS
// if set, else bin/k8s under the repository root (the nearest parent directory of the
// working directory holding go.mod). It fails if a binary is missing.
func AssetsDir() (string, error) {
	dir := os.Getenv(AssetsEnv)
	if dir == "" {
		root, err := gobuild.RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	var missing []string
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: %s not found in %s", ErrAssetsMissing, strings.Join(missing, ", "), dir)
	}
	return dir, nil
}

var noFsync sync.Map // etcd path -> bool

// etcdSupportsNoFsync reports whether the etcd binary knows --unsafe-no-fsync (3.5+); an
// older etcd from KUBEBUILDER_ASSETS would refuse to start with it.
func etcdSupportsNoFsync(path string) bool {
	if v, ok := noFsync.Load(path); ok {
		return v.(bool)
	}
	out, _ := exec.Command(path, "--help").CombinedOutput() // etcd --help exits 0; output is what matters
	ok := bytes.Contains(out, []byte("--unsafe-no-fsync"))
	noFsync.Store(path, ok)
	return ok
}
