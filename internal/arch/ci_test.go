package arch

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCIDoesNoHiddenSetup: .ci/run may only run make targets (and print). An
// install step there would keep CI green while the README's `make test` fails
// on a fresh machine, as it once did (fortio was installed by CI only).
func TestCIDoesNoHiddenSetup(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allowed := regexp.MustCompile(`^(make [a-z][a-z0-9-]*( [A-Z][A-Z0-9_]*=("[^"]*"|\S+))*|step .*|set -euo pipefail|cd "\$\(dirname "\$0"\)/\.\."|start=\$SECONDS|step\(\) \{ .*\})$`)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !allowed.MatchString(line) {
			t.Errorf(".ci/run:%d runs %q: CI may only run make targets; put set-up into the target that needs it", n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}
