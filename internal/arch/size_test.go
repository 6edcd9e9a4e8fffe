package arch

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Limits on product files (tests, e2e, hack and bench excepted): a file over
// maxFileLines does several jobs and should be split along them; a main does
// flags -> options -> Run and nothing else.
const (
	maxFileLines = 450
	maxMainLines = 60
)

func TestFileSizes(t *testing.T) {
	out, err := exec.Command("git", "-C", filepath.Join("..", ".."), "ls-files", "*.go").Output()
	if err != nil {
		t.Skipf("git ls-files: %v (not a git checkout)", err)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "e2e/") || strings.HasPrefix(f, "hack/") || strings.HasPrefix(f, "bench/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("..", "..", f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Count(b, []byte("\n"))
		limit := maxFileLines
		if filepath.Base(f) == "main.go" {
			limit = maxMainLines
		}
		if lines > limit {
			t.Errorf("%s has %d lines, more than %d: split it along its jobs", f, lines, limit)
		}
	}
}
