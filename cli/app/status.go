package app

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/cli/status"
)

func newStatus(name string, g *globals, streams IO) *cobra.Command {
	var out string
	var all, liveFlag bool
	c := &cobra.Command{
		Use:   "status [POD]",
		Short: "Show per pod: sidecar and why, identity, certificates, listeners",
		Long: `status shows, for every pod of a namespace (or one pod), whether it has the
podtls sidecar and why (the webhook's reason codes), its SPIFFE identity,
inbound listeners, upstreams, allowed callers, its external certificate
(issuer, expiry, last error, from the certificate's Secret) and recent podtls
Events. The mesh certificate exists only inside the pod: --live reads it from
the sidecar's admin endpoint (port 15000, /certs) through the API server's
pod proxy, which needs the pods/proxy permission.

A table for many pods, details for one; -o wide for a wider table, -o json
for the documented schema podtls.io/status/v1.`,
		Example: `  # Every pod of the current namespace
  ` + name + ` status

  # One pod, with the certificates its sidecar serves right now
  ` + name + ` status -n demo preference-7d9c --live

  # Pods that should have the sidecar but do not, in every namespace
  ` + name + ` status -A -o json | jq '.pods[] | select(.missing)'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := outputFlag(out, "", "wide", "json"); err != nil {
				return err
			}
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			opts := status.Options{Namespace: cl.Namespace, AllNamespaces: all, ControllerNamespace: g.controllerNamespace, Live: liveFlag}
			if len(args) == 1 {
				if all {
					return fmt.Errorf("a POD name needs a namespace (-n), not -A")
				}
				opts.Pod = args[0]
			}
			rep, err := status.Collect(cmd.Context(), cl.Kube, opts)
			if err != nil {
				return err
			}
			now := time.Now()
			switch {
			case out == "json":
				return output.JSON(streams.Out, rep)
			case out == "wide":
				return rep.WriteTable(streams.Out, now, true)
			case opts.Pod != "":
				return rep.WriteDetail(streams.Out, now, output.Style{Color: streams.Color})
			case len(rep.Pods) == 0 && len(rep.Workloads) == 0:
				_, err := fmt.Fprintf(streams.Out, "No pods in namespace %s.\n", cl.Namespace)
				return err
			default:
				return rep.WriteTable(streams.Out, now, false)
			}
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output format: wide or json (default: table, or details for one pod)")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"wide", "json"}, cobra.ShellCompDirectiveNoFileComp))
	// POD completes from the cluster, best effort (no completion on any error).
	c.ValidArgsFunction = func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cl, err := g.kube.Connect()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		pods, err := cl.Kube.CoreV1().Pods(cl.Namespace).List(cmd.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, prefix) {
				names = append(names, p.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	c.Flags().BoolVarP(&all, "all-namespaces", "A", false, "pods of every namespace")
	c.Flags().BoolVar(&liveFlag, "live", false, "read the mesh certificate from each running sidecar through the API server's pod proxy")
	return c
}
