package webhook_test

import (
	"flag"
	"os"
	"testing"

	"github.com/podtls/podtls/controller"
)

// TestMain sets up process-wide logging once, as podtls-controller's main does.
func TestMain(m *testing.M) {
	flag.Parse()
	level := "info"
	if testing.Verbose() {
		level = "debug"
	}
	controller.SetupLogging(level)
	os.Exit(m.Run())
}
