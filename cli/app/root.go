// Package app wires the podtls commands (cobra): check, status, inject,
// uninject, version and completion. main only calls Execute.
package app

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/controller/options"
)

// version is the client version: the same variable `make build` stamps into
// every binary (-X github.com/podtls/podtls/controller/options.Version=...),
// so the CLI and the controller of one build report the same version.
func version() string { return options.Version }

// ExitError carries a process exit code without a message of its own (the
// command has printed its report already).
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// IO are the streams a command uses.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
	// Color enables ANSI colour on Out.
	Color bool
}

// globals are the flags of every command.
type globals struct {
	kube                kube.Flags
	controllerNamespace string
}

// NewRoot builds the command tree. name is the binary name as invoked:
// "kubectl-podtls" makes the examples read "kubectl podtls".
func NewRoot(name string, streams IO) *cobra.Command {
	cmdName := "podtls"
	if strings.HasPrefix(filepath.Base(name), "kubectl-podtls") {
		cmdName = "kubectl podtls"
	}
	g := &globals{}
	root := &cobra.Command{
		Use:   cmdName,
		Short: "Inspect and operate podtls: end-to-end TLS for pods",
		Long: `podtls shows every certificate podtls manages and why a pod is (or is not)
protected, checks the installation, and renders the webhook's mutation offline.
It talks to the cluster through your kubeconfig, like kubectl. Installed as
kubectl-podtls on the PATH it also runs as "kubectl podtls".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.Err)
	g.kube.Bind(root.PersistentFlags())
	root.PersistentFlags().StringVar(&g.controllerNamespace, "controller-namespace", "podtls-system", "namespace podtls-controller runs in")
	root.AddCommand(
		newCheck(cmdName, g, streams),
		newStatus(cmdName, g, streams),
		newCA(cmdName, g, streams),
		newWorkload(cmdName, g, streams),
		newInject(cmdName, g, streams, false),
		newInject(cmdName, g, streams, true),
		newVersion(streams),
	)
	root.InitDefaultCompletionCmd()
	// Flag help wrapped to 80 columns, like the rest of the output.
	root.SetUsageTemplate(strings.NewReplacer(
		".LocalFlags.FlagUsages", "(.LocalFlags.FlagUsagesWrapped 80)",
		".InheritedFlags.FlagUsages", "(.InheritedFlags.FlagUsagesWrapped 80)",
	).Replace(root.UsageTemplate()))
	return root
}

// Execute runs the CLI and returns the process exit code.
func Execute(args []string, streams IO) int {
	root := NewRoot(args[0], streams)
	root.SetArgs(args[1:])
	err := root.Execute()
	var exit ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.Code
	default:
		fmt.Fprintf(streams.Err, "Error: %v\n", err)
		return 2
	}
}

// StdIO are the process's streams, with colour only on a terminal.
func StdIO() IO {
	return IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Color: output.ColorEnabled(os.Stdout)}
}

func newVersion(streams IO) *cobra.Command {
	var short bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the client version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if short {
				_, err := fmt.Fprintln(streams.Out, version())
				return err
			}
			_, err := fmt.Fprintf(streams.Out, "podtls client %s\n", version())
			return err
		},
	}
	c.Flags().BoolVar(&short, "short", false, "print the version only")
	return c
}

// outputFlag validates -o values.
func outputFlag(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("--output %q: want one of %s", v, strings.Join(allowed, ", "))
}
