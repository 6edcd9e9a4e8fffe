// Package acme_test proves external certificates end to end: the real
// podtls-controller (in-process, against a real kube-apiserver from envtest)
// obtains certificates from Pebble, solving DNS-01 through lego's rfc2136
// provider against BIND9, and a real podtls-sidecar serves them.
//
// Needs bin/k8s (make envtest-assets), bind9 and bin/tools/pebble
// (make acme-assets) and openssl. Without them the tests skip, unless
// PODTLS_REQUIRE_ENVTEST=1 / PODTLS_REQUIRE_ACME=1 make them fail.
//
//	PODTLS_REQUIRE_ACME=1 PODTLS_REQUIRE_ENVTEST=1 go test -race -v ./e2e/acme
package acme_test

import (
	"flag"
	"os"
	"testing"

	"github.com/podtls/podtls/controller"
)

// TestMain sets up process-wide logging once, as podtls-controller's main does.
func TestMain(m *testing.M) {
	flag.Parse()
	// Info only: debug logs every admission, and the suite creates many pods.
	controller.SetupLogging("info")
	code := m.Run()
	cleanupSidecarBuild()
	os.Exit(code)
}
