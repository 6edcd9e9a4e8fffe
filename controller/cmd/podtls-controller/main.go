// Command podtls-controller runs the podtls admission webhook, internal CA,
// trust-bundle distributor and ACME manager. Flags: podtls-controller --help,
// or docs/controller.md.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/podtls/podtls/controller"
	"github.com/podtls/podtls/controller/options"
)

func main() {
	opts := options.DefaultOptions()
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
