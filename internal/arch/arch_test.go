package arch

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/podtls/podtls"

// rules: no package matched by pkgs may depend, directly or not, on a
// forbidden package: an import path, or a tree written "path/...".
type rule struct {
	name      string
	pkgs      string
	forbidden []string
}

var rules = []rule{
	{
		// The CLI runs on laptops: it must not link the controller's manager,
		// lego's DNS providers or cloud SDKs (issue #12: 4m20s cold build).
		name: "cli is light",
		pkgs: module + "/cli/...",
		forbidden: []string{
			module + "/controller",
			module + "/webhook",
			module + "/acme",
			module + "/acme/reconciler",
			module + "/acme/providers/...",
			"github.com/go-acme/lego/...",
			"github.com/aws/...",
			"cloud.google.com/...",
			"google.golang.org/api/...",
			"github.com/Azure/...",
			"sigs.k8s.io/controller-runtime/...",
		},
	},
	{
		// The CLI parses the issuer configuration with the controller's own
		// parser; the DNS providers (lego) stay out of it.
		name: "acme issuer configuration is light",
		pkgs: module + "/acme/issuerconfig",
		forbidden: []string{
			module + "/acme/providers/...",
			"github.com/go-acme/lego/...",
		},
	},
	{
		// controller/options is what the CLI imports of the controller.
		name: "controller options are light",
		pkgs: module + "/controller/options",
		forbidden: []string{
			module + "/ca",
			module + "/webhook",
			"github.com/go-acme/lego/...",
			"sigs.k8s.io/controller-runtime/...",
		},
	},
}

// rooms: the packages below the composition root never import the webhook,
// the controller or the CLI; the shared nouns import no room at all.
func init() {
	up := []string{module + "/webhook/...", module + "/controller/...", module + "/cli/..."}
	for _, room := range []string{"/ca/...", "/acme/...", "/sidecar/...", "/discovery/...", "/dnsrecords/...", "/rollout/...", "/sidecarevents/...", "/workloads/..."} {
		rules = append(rules, rule{room + " points down", module + room, up})
	}
	for _, noun := range []string{"/contract/...", "/identity/...", "/ca/signapi/...", "/renewal/...", "/tlsconfig/...", "/discovery/discoveryapi/..."} {
		rules = append(rules, rule{noun + " is a shared noun", module + noun, append([]string{module + "/ca",
			module + "/ca/server/...", module + "/acme/...", module + "/sidecar/...", module + "/discovery",
			"k8s.io/...", "sigs.k8s.io/..."}, up...)})
	}
	// The sidecar speaks discovery's wire contract; the informer side (and
	// controller-runtime with it) stays in the controller.
	rules = append(rules, rule{"sidecar reads only the discovery contract", module + "/sidecar/...",
		[]string{module + "/discovery", module + "/ca/server/..."}})
}

func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH")
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			deps := goListDeps(t, r.pkgs)
			for _, d := range deps {
				for _, f := range r.forbidden {
					if matches(f, d) {
						t.Errorf("%s depends on %s (forbidden: %s)", r.pkgs, d, f)
					}
				}
			}
		})
	}
}

// goListDeps lists every package pattern depends on, tests excluded.
func goListDeps(t *testing.T, pattern string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pattern).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps %s: %v\n%s", pattern, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pattern, err)
	}
	return strings.Fields(string(out))
}

// matches reports whether pkg is pattern, or lies in the tree "path/...".
func matches(pattern, pkg string) bool {
	tree, ok := strings.CutSuffix(pattern, "/...")
	if !ok {
		return pkg == pattern
	}
	return pkg == tree || strings.HasPrefix(pkg, tree+"/")
}

func TestMatches(t *testing.T) {
	for _, tt := range []struct {
		pattern, pkg string
		want         bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/...", "a/b", true},
		{"a/b/...", "a/b/c", true},
		{"a/b/...", "a/bc", false},
	} {
		if got := matches(tt.pattern, tt.pkg); got != tt.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tt.pattern, tt.pkg, got, tt.want)
		}
	}
}
