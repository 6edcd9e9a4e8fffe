package cluster

import (
	"os"
	"strings"
	"testing"
)

// Require skips a node suite unless PODTLS_E2E_NODE or PODTLS_REQUIRE_NODE is
// set, and checks that the node can run here (root, binaries). With
// PODTLS_REQUIRE_NODE (CI, make e2e) a missing prerequisite fails the test
// instead of skipping it, so CI can never pass by running nothing.
func Require(t testing.TB, suite string) {
	t.Helper()
	require := os.Getenv("PODTLS_REQUIRE_NODE") != ""
	if !require && os.Getenv("PODTLS_E2E_NODE") == "" {
		t.Skipf("%s e2e disabled: set PODTLS_E2E_NODE=1 (needs root and bin/k8s, see docs/local-cluster.md)", suite)
	}
	stop := t.Skipf
	if require {
		stop = t.Fatalf
	}
	if os.Geteuid() != 0 {
		stop("%s e2e needs root", suite)
	}
	if missing := MissingBinaries(Options{}); len(missing) > 0 {
		stop("%s e2e prerequisites missing (make node-assets): %s", suite, strings.Join(missing, ", "))
	}
}
