// Package injectconfig builds the inject.Config the CLI's offline inject uses:
// from flags, or from the running controller (its Deployment's arguments and
// the CA Secret's roots), so the output matches what the webhook would store.
package injectconfig

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/controller/options"
	"github.com/podtls/podtls/webhook/inject"
)

// DeploymentName is the controller's Deployment in the controller namespace.
const DeploymentName = "podtls-controller"

// ControllerContainer is the container name in that Deployment; when absent,
// the first container is used.
const ControllerContainer = "controller"

// Flags select the configuration. The defaults are the controller's.
type Flags struct {
	Opts           options.Options
	TrustRootsFile string
	FromCluster    bool
	// Version is recorded in the status annotation unless --from-cluster
	// finds the controller's.
	Version string
}

// NewFlags returns the controller's defaults.
func NewFlags() *Flags {
	o := options.DefaultOptions()
	o.SidecarMode = string(contract.SidecarModeNative)
	return &Flags{Opts: o, Version: options.Version}
}

// Bind registers the flags. The controller namespace is bound by the root
// command (--controller-namespace) into Opts.Namespace.
func (f *Flags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Opts.TrustDomain, "trust-domain", f.Opts.TrustDomain, "SPIFFE trust domain (controller's --trust-domain)")
	fs.StringVar(&f.Opts.ClusterDomain, "cluster-domain", f.Opts.ClusterDomain, "cluster DNS suffix (controller's --cluster-domain)")
	fs.StringVar(&f.Opts.SidecarImage, "sidecar-image", f.Opts.SidecarImage, "image of the injected sidecar (controller's --sidecar-image)")
	fs.StringVar(&f.Opts.CAURL, "ca-url", "", "URL sidecars reach the CA at (default: the controller Service, port 8443)")
	fs.StringVar(&f.Opts.SidecarMode, "sidecar-mode", f.Opts.SidecarMode, `"native" or "legacy" (controller's --sidecar-mode)`)
	fs.StringVar(&f.TrustRootsFile, "trust-roots", "", "PEM file with the CA roots for PODTLS_TRUST_ROOTS (default: none; --from-cluster reads them)")
	fs.BoolVar(&f.FromCluster, "from-cluster", false, "read every setting from the running controller's Deployment and the CA Secret")
}

// Build returns the configuration: from the cluster when FromCluster (kube
// must be set), else from the flags.
func (f *Flags) Build(ctx context.Context, kube kubernetes.Interface) (inject.Config, error) {
	opts := f.Opts
	version := f.Version
	var roots string
	if f.FromCluster {
		if kube == nil {
			return inject.Config{}, fmt.Errorf("--from-cluster needs a cluster connection")
		}
		o, img, err := FromDeployment(ctx, kube, opts.Namespace)
		if err != nil {
			return inject.Config{}, err
		}
		opts = o
		if i := strings.LastIndex(img, ":"); i > 0 && !strings.Contains(img[i:], "/") {
			version = img[i+1:]
		}
		mode, err := options.SidecarMode(opts.SidecarMode, kube.Discovery())
		if err != nil {
			return inject.Config{}, err
		}
		opts.SidecarMode = string(mode)
		sec, err := kube.CoreV1().Secrets(opts.Namespace).Get(ctx, opts.CASecret, metav1.GetOptions{})
		if err != nil {
			return inject.Config{}, fmt.Errorf("read CA Secret %s/%s: %w", opts.Namespace, opts.CASecret, err)
		}
		m, err := ca.MaterialFromSecret(sec)
		if err != nil {
			return inject.Config{}, fmt.Errorf("CA Secret %s/%s: %w", opts.Namespace, opts.CASecret, err)
		}
		roots = string(m.TrustBundlePEM())
	} else if f.TrustRootsFile != "" {
		b, err := readFile(f.TrustRootsFile)
		if err != nil {
			return inject.Config{}, err
		}
		roots = string(b)
	}
	return Config(opts, version, roots)
}

// Config maps controller options onto the injection config with the
// controller's own function (the mode must already be resolved).
func Config(opts options.Options, version, roots string) (inject.Config, error) {
	return options.InjectConfig(opts, contract.Placement(opts.SidecarMode), version, roots)
}

// DecideConfig is the configuration for Decide and Parse only (which do not
// depend on the sidecar mode, so "auto" needs no API server version).
func DecideConfig(opts options.Options) (inject.Config, error) {
	if opts.SidecarMode == "auto" {
		opts.SidecarMode = string(contract.SidecarModeNative)
	}
	return Config(opts, options.Version, "")
}

// FromDeployment parses the controller Deployment's container arguments with
// the controller's own flag definitions. It returns the options and the image.
func FromDeployment(ctx context.Context, kube kubernetes.Interface, namespace string) (options.Options, string, error) {
	d, err := kube.AppsV1().Deployments(namespace).Get(ctx, DeploymentName, metav1.GetOptions{})
	if err != nil {
		return options.Options{}, "", fmt.Errorf("read controller Deployment %s/%s: %w", namespace, DeploymentName, err)
	}
	c, err := controllerContainer(d)
	if err != nil {
		return options.Options{}, "", err
	}
	opts, err := ParseArgs(append(append([]string(nil), c.Command...), c.Args...))
	if err != nil {
		return options.Options{}, "", fmt.Errorf("controller Deployment %s/%s: %w", namespace, DeploymentName, err)
	}
	return opts, c.Image, nil
}

func controllerContainer(d *appsv1.Deployment) (corev1.Container, error) {
	cs := d.Spec.Template.Spec.Containers
	if len(cs) == 0 {
		return corev1.Container{}, fmt.Errorf("controller Deployment %s/%s has no containers", d.Namespace, d.Name)
	}
	for _, c := range cs {
		if c.Name == ControllerContainer {
			return c, nil
		}
	}
	return cs[0], nil
}

// ParseArgs reads podtls-controller flags from a command line (a leading
// non-flag word, the binary, is skipped). Flags the controller does not
// define are an error, as they would be for the controller.
func ParseArgs(args []string) (options.Options, error) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		args = args[1:]
	}
	opts := options.DefaultOptions()
	fs := flag.NewFlagSet("podtls-controller", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts.BindFlags(fs)
	fs.String("kubeconfig", "", "") // controller-runtime's global flag
	if err := fs.Parse(args); err != nil {
		return options.Options{}, fmt.Errorf("controller arguments: %w", err)
	}
	return opts, nil
}

func readFile(path string) ([]byte, error) {
	if path == "-" {
		return nil, fmt.Errorf("--trust-roots: stdin is reserved for manifests")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust roots: %w", err)
	}
	return b, nil
}
