package providers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsListEveryKey keeps docs/acme.md in step with the compiled-in set.
func TestDocsListEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "acme.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, n := range Names() {
		if !strings.Contains(doc, "### `"+n+"`") {
			t.Errorf("docs/acme.md has no section for provider %s", n)
		}
		for _, k := range Keys(n) {
			for _, name := range append([]string{k.Name}, k.Aliases...) {
				if !strings.Contains(doc, "`"+name+"`") {
					t.Errorf("docs/acme.md does not mention %s of %s", name, n)
				}
			}
		}
	}
}
