package demo

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// cliPkg is the podtls command, built with the images before the cluster starts.
const cliPkg = "./cli/cmd/podtls"

// cli runs the podtls command's `status` and `check` against the node, as a
// user would from their machine with the cluster's kubeconfig.
// A red check is recorded in the Result (the e2e test fails on it) but does
// not stop the demo: the output says what is red and why.
func (r *run) cli(ctx context.Context) error {
	bin := filepath.Join(r.dir, filepath.Base(cliPkg))
	out, err := r.c.Exec(ctx, bin, "--kubeconfig", r.c.Kubeconfig, "status", "-n", ns, "--live")
	r.printf("    $ podtls status -n %s --live\n%s", ns, indent(string(out)))
	if err != nil {
		return fmt.Errorf("podtls status: %w", err)
	}
	// One pod in detail: the public one, with both of its certificates.
	pods, err := r.appPods(ctx)
	if err != nil {
		return err
	}
	customer, ok := pods["customer"]
	if !ok {
		return errors.New("no customer pod")
	}
	out, err = r.c.Exec(ctx, bin, "--kubeconfig", r.c.Kubeconfig, "status", "-n", ns, "--live", customer.Name)
	r.res.Status = string(out)
	r.printf("    $ podtls status -n %s --live %s\n%s", ns, customer.Name, indent(string(out)))
	if err != nil {
		return fmt.Errorf("podtls status %s: %w", customer.Name, err)
	}
	out, err = r.c.Exec(ctx, bin, "--kubeconfig", r.c.Kubeconfig, "check")
	r.res.CheckOutput = string(out)
	r.printf("    $ podtls check\n%s", indent(string(out)))
	var exit *exec.ExitError
	switch {
	case err == nil:
		r.res.CheckExit = 0
	case errors.As(err, &exit):
		r.res.CheckExit = exit.ExitCode()
		r.printf("    podtls check reported a problem (exit %d): see the red lines above\n", r.res.CheckExit)
	default:
		return fmt.Errorf("podtls check: %w", err)
	}
	if !strings.Contains(r.res.Status, "spiffe://") {
		return errors.New("podtls status shows no SPIFFE identity")
	}
	return nil
}
