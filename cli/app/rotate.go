package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/cli/rotate"
)

func newCA(name string, g *globals, streams IO) *cobra.Command {
	c := &cobra.Command{Use: "ca", Short: "Operate podtls's certificate authority"}
	c.AddCommand(newRotate(name, g, streams))
	return c
}

func newRotate(name string, g *globals, streams IO) *cobra.Command {
	var secret, out string
	var force, noWorkloads bool
	c := &cobra.Command{
		Use:   "rotate status|publish|switch|retire",
		Short: "Rotate the CA's root without an outage, one step at a time",
		Long: `rotate replaces the root of podtls's CA in three steps, each a change of the
CA Secret that every controller replica picks up within a minute:

  publish  a new root (ECDSA P-256, 10 years) is added beside the current one;
           the controller publishes both in every trust bundle (ConfigMaps
           podtls-trust-bundle, and ClusterTrustBundles on Kubernetes >= 1.37).
  switch   a new intermediate of the new root signs from now on; the old root
           stays trusted. Refused while a trust bundle lacks the new root.
  retire   the old root leaves the trust bundles. Refused while a workload
           still serves a leaf of the old chain, or cannot be read.

status shows the phase, the roots, which trust bundles lag and how many
workloads serve a leaf of which chain (read from each sidecar's /certs through
the API server's pod proxy: pods/proxy get). Workloads move to the new chain at
their next renewal (agent: 60-70% of the lifetime; podCertificate: the
kubelet's refresh), without a restart. Only a CA podtls generated can be
rotated this way; for a CA you brought, see docs/operations.md.`,
		Example: `  ` + name + ` ca rotate status
  ` + name + ` ca rotate publish
  ` + name + ` ca rotate switch
  ` + name + ` ca rotate retire`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"status", "publish", "switch", "retire"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := outputFlag(out, "", "json"); err != nil {
				return err
			}
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			o := rotate.Options{Namespace: g.controllerNamespace, Secret: secret, Force: force}
			if !noWorkloads {
				o.AdminGet = kube.AdminGet(cl.Kube)
			}
			ctx := cmd.Context()
			switch args[0] {
			case "status":
				rep, err := rotate.Collect(ctx, cl.Kube, o)
				if err != nil {
					return err
				}
				if out == "json" {
					return output.JSON(streams.Out, rep)
				}
				return rep.WriteText(streams.Out)
			case "publish":
				next, err := rotate.Publish(ctx, cl.Kube, o)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(streams.Out, "published the next root %s (sha256 %s) beside the current one; wait for the trust bundles (%s ca rotate status), then switch\n", next.Subject, next.SHA256, name)
				return err
			case "switch":
				if err := rotate.Switch(ctx, cl.Kube, o); err != nil {
					return err
				}
				_, err = fmt.Fprintf(streams.Out, "new leaves come from an intermediate of the new root once the controller replicas have re-read the CA Secret (within a minute); workloads move at their next renewal (%s ca rotate status), then retire\n", name)
				return err
			case "retire":
				gone, err := rotate.Retire(ctx, cl.Kube, o)
				if err != nil {
					return err
				}
				for _, r := range gone {
					if _, err := fmt.Fprintf(streams.Out, "retired root %s (sha256 %s)\n", r.Subject, r.SHA256); err != nil {
						return err
					}
				}
				return nil
			}
			return fmt.Errorf("unknown step %q: want status, publish, switch or retire", args[0])
		},
	}
	c.Flags().StringVar(&secret, "ca-secret", ca.DefaultSecretName, "the CA Secret in --controller-namespace")
	c.Flags().BoolVar(&force, "force", false, "run switch or retire although its check failed (traffic may break)")
	c.Flags().BoolVar(&noWorkloads, "no-workloads", false, "do not read the sidecars (no pods/proxy permission); retire then cannot check them")
	c.Flags().StringVarP(&out, "output", "o", "", "status output: json")
	return c
}
