package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/podtls/podtls/cli/check"
	"github.com/podtls/podtls/cli/output"
)

func newCheck(name string, g *globals, streams IO) *cobra.Command {
	opts := check.DefaultOptions()
	var out string
	c := &cobra.Command{
		Use:   "check",
		Short: "Check the installation and every certificate; exit 1 on failure",
		Long: `check runs every health check of a podtls installation and prints one line
per check: [ok], [warn], [FAIL] or [skip], with a hint for anything not ok.
It exits 1 when any check failed, 0 otherwise (warnings included), 2 on usage
errors or when the API server cannot be reached. --output json prints the
report in the documented schema podtls.io/check/v1 (docs/cli.md).`,
		Example: `  # Check the installation
  ` + name + ` check

  # In a script: fail the pipeline on any red line
  ` + name + ` check --output json > report.json || exit 1

  # Require the webhook's serving certificate to be valid for 6 more hours
  ` + name + ` check --min-validity 6h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := outputFlag(out, "text", "json"); err != nil {
				return err
			}
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			// One clear error instead of every check failing the same way.
			if _, err := cl.Kube.Discovery().ServerVersion(); err != nil {
				return fmt.Errorf("cannot reach the API server %s: %w", cl.Config.Host, err)
			}
			opts.Namespace = g.controllerNamespace
			rep := check.Run(cmd.Context(), cl.Kube, opts)
			if out == "json" {
				err = output.JSON(streams.Out, rep)
			} else {
				err = rep.Write(streams.Out, output.Style{Color: streams.Color})
			}
			if err != nil {
				return err
			}
			if rep.Failed() {
				return ExitError{Code: 1}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "text", "output format: text or json")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	c.Flags().DurationVar(&opts.MinValidity, "min-validity", opts.MinValidity, "minimum remaining validity of the webhook's serving certificate")
	c.Flags().DurationVar(&opts.WarnBefore, "warn-before", opts.WarnBefore, "warn when a CA certificate expires sooner than this")
	c.Flags().DurationVar(&opts.FailBefore, "fail-before", opts.FailBefore, "fail when a CA certificate expires sooner than this")
	return c
}
