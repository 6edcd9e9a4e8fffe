// Command podtls inspects and operates podtls from a workstation: check,
// status, inject, uninject, version, completion. Installed as kubectl-podtls
// on the PATH, it also runs as "kubectl podtls". See docs/cli.md.
package main

import (
	"os"

	"github.com/podtls/podtls/cli/app"
)

func main() {
	os.Exit(app.Execute(os.Args, app.StdIO()))
}
