package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/cli/injectconfig"
	"github.com/podtls/podtls/cli/manifest"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

func newInject(name string, g *globals, streams IO, reverse bool) *cobra.Command {
	flags := injectconfig.NewFlags()
	var files []string
	var nsEnabled, quiet bool
	use, short := "inject", "Add the sidecar to manifests offline, as the webhook would"
	long := `inject reads Kubernetes manifests (multi-document YAML) and writes them back
with the podtls sidecar added to every Pod and pod template (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) that the webhook would
inject, using the same code as the webhook. Other documents pass through
unchanged. Whether a pod is injected follows the webhook's rules: the pod's
podtls.io/inject annotation, else its namespace's label, taken from a
Namespace document in the input, from the cluster (--from-cluster), or
assumed enabled with --namespace-enabled. A report of what changed goes to
stderr.`
	example := `  # Render, inject with the settings of the running controller, apply
  helm template my-app ./chart \
    | ` + name + ` inject -f - --from-cluster | kubectl apply -f -

  # Offline, with explicit settings
  ` + name + ` inject -f deploy.yaml --namespace-enabled \
    --sidecar-image registry.example/podtls-sidecar:v1.2.3`
	if reverse {
		use, short = "uninject", "Remove the podtls sidecar from manifests"
		long = `uninject reads Kubernetes manifests (multi-document YAML) and removes what the
webhook added: the sidecar container, podtls's volumes and status annotations.
It exactly reverses inject. Other documents pass through unchanged.`
		example = `  # Remove the sidecar from a pod exported from the cluster
  kubectl get pod web-0 -o yaml | ` + name + ` uninject -f -`
	}
	c := &cobra.Command{
		Use:     use + " -f FILE|-",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f FILE (or - for stdin) is required")
			}
			var in bytes.Buffer
			for i, f := range files {
				b, err := readInput(f, streams.In)
				if err != nil {
					return err
				}
				if i > 0 {
					in.WriteString("\n---\n")
				}
				in.Write(b)
			}
			opts := manifest.Options{Namespace: g.kube.Namespace}
			fn := uninjectFunc
			if !reverse {
				var err error
				if fn, err = injectSetup(cmd.Context(), g, flags, nsEnabled, &opts, streams); err != nil {
					return err
				}
			}
			var out bytes.Buffer
			res, err := manifest.Transform(&in, &out, fn, opts)
			if err != nil {
				return err
			}
			if _, err := streams.Out.Write(out.Bytes()); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			if !quiet {
				for _, r := range res {
					verb := "unchanged"
					if r.Changed {
						verb = use + "ed"
					}
					line := fmt.Sprintf("%s/%s %s", strings.ToLower(r.Kind), r.Name, verb)
					if r.Note != "" {
						line += " (" + r.Note + ")"
					}
					for _, l := range output.Wrap(line, output.Width, "", "    ") {
						fmt.Fprintln(streams.Err, l)
					}
				}
			}
			return nil
		},
	}
	c.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, or - for stdin (repeatable)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "no report on stderr")
	if !reverse {
		flags.Bind(c.Flags())
		c.Flags().BoolVar(&nsEnabled, "namespace-enabled", false, "treat every namespace as labelled podtls.io/inject=enabled")
	}
	return c
}

// uninjectFunc removes the sidecar with the webhook package's Uninject.
func uninjectFunc(pod *corev1.Pod, _ map[string]string) (string, error) {
	out, err := inject.Uninject(pod)
	if err != nil {
		return "", err
	}
	*pod = *out
	return "", nil
}

// injectSetup builds the injection config from the flags or the cluster and,
// with --from-cluster, a cached lookup of namespace labels.
func injectSetup(ctx context.Context, g *globals, flags *injectconfig.Flags, nsEnabled bool,
	opts *manifest.Options, streams IO) (manifest.Func, error) {
	flags.Opts.Namespace = g.controllerNamespace
	if !flags.FromCluster {
		cfg, err := flags.Build(ctx, nil)
		if err != nil {
			return nil, err
		}
		return injectFunc(cfg, nsEnabled), nil
	}
	cl, err := g.kube.Connect()
	if err != nil {
		return nil, err
	}
	cfg, err := flags.Build(ctx, cl.Kube)
	if err != nil {
		return nil, err
	}
	opts.Namespace = cl.Namespace // -n, else the context's, as kubectl apply would use
	cache := map[string]map[string]string{}
	opts.NamespaceLabels = func(ns string) map[string]string {
		if l, ok := cache[ns]; ok {
			return l
		}
		n, err := cl.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			fmt.Fprintf(streams.Err, "warning: namespace %s does not exist; only pods that opt in are injected\n", ns)
		case err != nil:
			fmt.Fprintf(streams.Err, "warning: namespace %s: %v; only pods that opt in are injected\n", ns, err)
		default:
			cache[ns] = n.Labels
			return n.Labels
		}
		cache[ns] = nil
		return nil
	}
	return injectFunc(cfg, nsEnabled), nil
}

// injectFunc runs the webhook's Mutate on each pod.
func injectFunc(cfg inject.Config, nsEnabled bool) manifest.Func {
	return func(pod *corev1.Pod, labels map[string]string) (string, error) {
		var ns *corev1.Namespace
		if labels != nil || nsEnabled {
			ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pod.Namespace, Labels: map[string]string{}}}
			for k, v := range labels {
				ns.Labels[k] = v
			}
			if nsEnabled {
				ns.Labels[contract.Inject] = contract.NamespaceEnabled
			}
		}
		res, err := inject.Mutate(pod, ns, cfg)
		if err != nil {
			return "", err
		}
		note := make([]string, 0, len(res.Decision.Reasons)+len(res.Warnings))
		for _, r := range res.Decision.Reasons {
			note = append(note, string(r))
		}
		for _, w := range res.Warnings {
			note = append(note, "warning: "+w)
		}
		return strings.Join(note, "; "), nil
	}
}

func readInput(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return b, nil
}
