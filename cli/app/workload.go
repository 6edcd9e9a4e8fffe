package app

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/podtls/podtls/cli/status"
	"github.com/podtls/podtls/cli/workload"
	"github.com/podtls/podtls/workloads"
)

func newWorkload(name string, g *globals, streams IO) *cobra.Command {
	c := &cobra.Command{Use: "workload", Short: "Register machines outside Kubernetes (VMs, bare metal) in the mesh"}
	var (
		sa, tokenFile, controllerSA string
		addrs, ports                []string
		ttl                         time.Duration
	)
	opts := func() workload.Options {
		return workload.Options{ControllerNamespace: g.controllerNamespace, ControllerServiceAccount: controllerSA, TokenTTL: ttl}
	}
	writeToken := func(token string) error {
		if tokenFile == "" {
			_, err := fmt.Fprintln(streams.Out, token)
			return err
		}
		if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			return fmt.Errorf("write join token: %w", err)
		}
		_, err := fmt.Fprintf(streams.Err, "join token written to %s (valid once, for %s): copy it to the machine's --join-token-file\n", tokenFile, ttl)
		return err
	}
	register := &cobra.Command{
		Use:   "register NAME --address IP --port NAME=PORT [--service-account SA]",
		Short: "Register a machine and print its one-time join token",
		Long: `register creates, in the namespace, a Service NAME (no selector) with an
EndpointSlice of the machine's addresses, so pods call it as NAME.NAMESPACE.svc
through their outbound listeners like any pod; the service account whose
identity the machine gets (spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SA); and a
join token: a token of that service account bound to a one-time Secret, which
the machine's podtls-sidecar trades for its first certificate. Renewals are
then authenticated by the machine's current certificate; deleting the
registration (podtls workload delete) stops them.`,
		Example: `  ` + name + ` workload register billing -n legacy --address 10.0.0.7 --port https=8443 --token-file join.token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			r := workloads.Registration{Name: args[0], Namespace: cl.Namespace, ServiceAccount: sa}
			if r.ServiceAccount == "" {
				r.ServiceAccount = args[0]
			}
			for _, a := range addrs {
				ip, err := netip.ParseAddr(strings.TrimSpace(a))
				if err != nil {
					return fmt.Errorf("--address %q: not an IP address", a)
				}
				r.Addresses = append(r.Addresses, ip)
			}
			for _, p := range ports {
				n, v, ok := strings.Cut(p, "=")
				port, err := strconv.ParseInt(v, 10, 32)
				if !ok || err != nil {
					return fmt.Errorf("--port %q: want NAME=PORT, e.g. https=8443", p)
				}
				r.Ports = append(r.Ports, workloads.Port{Name: n, Port: int32(port)})
			}
			token, err := workload.Register(cmd.Context(), cl.Kube, r, opts())
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.Err, "registered %s/%s as spiffe://.../ns/%s/sa/%s\n", r.Namespace, r.Name, r.Namespace, r.ServiceAccount)
			return writeToken(token)
		},
	}
	register.Flags().StringVar(&sa, "service-account", "", "service account of the machine's identity (default: NAME; created if missing)")
	register.Flags().StringSliceVar(&addrs, "address", nil, "the machine's IP address, as pods reach it (repeat for more)")
	register.Flags().StringSliceVar(&ports, "port", nil, "NAME=PORT of a port its sidecar listens on (repeat for more)")
	token := &cobra.Command{
		Use:   "token NAME",
		Short: "Issue a new one-time join token (the previous one stops working)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			t, err := workload.Token(cmd.Context(), cl.Kube, cl.Namespace, args[0], opts())
			if err != nil {
				return err
			}
			return writeToken(t)
		},
	}
	for _, cmd := range []*cobra.Command{register, token} {
		cmd.Flags().StringVar(&tokenFile, "token-file", "", "write the join token to this file (mode 0600) instead of standard output")
		cmd.Flags().DurationVar(&ttl, "token-ttl", workload.DefaultTokenTTL, "how long the join token is valid (at least 10m)")
		cmd.Flags().StringVar(&controllerSA, "controller-service-account", "podtls-controller", "the controller's service account, allowed to consume the join Secret")
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a registration: the machine's next renewal is refused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			if err := workload.Delete(cmd.Context(), cl.Kube, cl.Namespace, args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(streams.Out, "deleted registration %s/%s\n", cl.Namespace, args[0])
			return err
		},
	}
	var all bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List registered machines, their identity, addresses and certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.kube.Connect()
			if err != nil {
				return err
			}
			ns := cl.Namespace
			if all {
				ns = ""
			}
			ws, err := status.Workloads(cmd.Context(), cl.Kube, ns)
			if err != nil {
				return err
			}
			if len(ws) == 0 {
				_, err := fmt.Fprintln(streams.Out, "No external workloads registered.")
				return err
			}
			return status.WriteWorkloads(streams.Out, ws, time.Now())
		},
	}
	list.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	c.AddCommand(register, token, del, list)
	return c
}
