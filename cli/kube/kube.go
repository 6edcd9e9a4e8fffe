// Package kube builds Kubernetes clients from the user's kubeconfig the way
// kubectl does: --kubeconfig, $KUBECONFIG, ~/.kube/config, --context and
// -n/--namespace, with the namespace of the current context as the default.
package kube

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podtls/podtls/contract"
)

// Flags are the connection flags shared by every command.
type Flags struct {
	Kubeconfig string
	Context    string
	Namespace  string
}

// Bind registers the flags on fs.
func (f *Flags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&f.Context, "context", "", "kubeconfig context to use (default: the current context)")
	fs.StringVarP(&f.Namespace, "namespace", "n", "", "namespace (default: the context's namespace)")
}

// Clients are what the commands talk to the cluster with.
type Clients struct {
	Config *rest.Config
	Kube   kubernetes.Interface
	// Namespace is -n, else the context's namespace, else "default".
	Namespace string
}

func (f *Flags) loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.Context}
	if f.Namespace != "" {
		overrides.Context.Namespace = f.Namespace
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
}

// Connect loads the kubeconfig and builds the clients.
func (f *Flags) Connect() (*Clients, error) {
	cc := f.loader()
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "podtls-cli"
	// A check makes a few dozen reads in a burst; client-go's default of
	// 5 QPS would make it wait for seconds, as it does for kubectl.
	cfg.QPS, cfg.Burst = 50, 100
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig namespace: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Clients{Config: cfg, Kube: kube, Namespace: ns}, nil
}

// AdminGetter reads a path of the podtls sidecar's admin endpoint of a pod.
type AdminGetter func(ctx context.Context, ns, pod, path string) ([]byte, error)

// AdminGet reads the sidecar's admin endpoint (port contract.AdminPort)
// through the API server's pod proxy, GET
// /api/v1/namespaces/NS/pods/NAME:15000/proxy/PATH, which needs the pods/proxy
// get permission.
func AdminGet(kube kubernetes.Interface) AdminGetter {
	return func(ctx context.Context, ns, pod, path string) ([]byte, error) {
		return kube.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").
			Name(pod + ":" + strconv.Itoa(contract.AdminPort)).SubResource("proxy").Suffix(path).DoRaw(ctx)
	}
}
