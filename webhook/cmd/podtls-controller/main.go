// Command podtls-controller runs the podtls admission webhook, internal CA and
// trust-bundle distributor. Flags: podtls-controller --help, or docs/controller.md.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/podtls/podtls/webhook/controller"
)

func main() {
	opts := controller.DefaultOptions()
	opts.BindFlags(flag.CommandLine) // --kubeconfig is controller-runtime's own flag
	flag.Parse()
	controller.SetupLogging(opts.LogLevel)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "podtls-controller: kubeconfig: %v\n", err)
		os.Exit(1)
	}
	if err := controller.Run(ctrl.SetupSignalHandler(), opts, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "podtls-controller: %v\n", err)
		os.Exit(1)
	}
}
