// Package mesh runs podtls on the real single-node cluster (e2e/cluster) the way a user
// would on any cluster: `helm upgrade --install` of charts/podtls, a labelled namespace,
// annotated workloads talking mTLS through their sidecars.
//
// Like e2e/node it needs root and the node binaries, and runs only with PODTLS_E2E_NODE=1
// (skips otherwise) or PODTLS_REQUIRE_NODE=1 (fails on missing prerequisites):
//
//	PODTLS_REQUIRE_NODE=1 go test -count=1 -v -timeout 20m ./e2e/mesh/
//
// The server app is testdata/whoami: it prints the client identity header of HTTP mode.
package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// Install describes one podtls installation: the chart charts/podtls with values derived
// from these fields.
type Install struct {
	Namespace       string // default podtls-system
	ControllerImage string // repository:tag
	SidecarImage    string // repository:tag
	// PullPolicy of the controller image and of the helm test pod (Never for images
	// imported into the node).
	PullPolicy corev1.PullPolicy
	// ExtraArgs are appended to the controller's command line (chart value extraArgs).
	ExtraArgs []string
	// Replicas of the controller (default 1; a production install runs 2).
	Replicas int32
	// ACME, when non-nil, is the issuer configuration (chart value acme.config) and turns
	// acme.enabled on.
	ACME map[string]any
	// ACMECredentials, when non-nil, has the chart create the DNS credentials Secret
	// (acme.dnsCredentials.stringData; keys are lego environment variable names).
	ACMECredentials map[string]string
	// Values are merged over the values derived from the fields above (maps merge
	// recursively, anything else replaces), for every other chart value.
	Values map[string]any

	// RepoRoot is the podtls checkout holding charts/podtls and bin/tools/helm (default:
	// found from the working directory upwards).
	RepoRoot string
	// Chart is the chart directory (default RepoRoot/charts/podtls), e.g. a previous
	// release's chart to upgrade from.
	Chart string
	// Release name (default podtls).
	Release string
}

// Fixed names of an installation (the chart's names).
const (
	controllerName = "podtls-controller"
	webhookName    = "podtls"
	caSecretName   = "podtls-ca"
)

func (in Install) namespace() string {
	if in.Namespace == "" {
		return "podtls-system"
	}
	return in.Namespace
}

func (in Install) release() string {
	if in.Release == "" {
		return "podtls"
	}
	return in.Release
}

// HelmValues are the chart values of this installation.
func (in Install) HelmValues() (map[string]any, error) {
	image := func(ref string) (map[string]any, error) {
		repo, tag, err := splitImage(ref)
		if err != nil {
			return nil, err
		}
		m := map[string]any{"repository": repo, "tag": tag}
		if in.PullPolicy != "" {
			m["pullPolicy"] = string(in.PullPolicy)
		}
		return m, nil
	}
	ctrl, err := image(in.ControllerImage)
	if err != nil {
		return nil, fmt.Errorf("controller image: %w", err)
	}
	side, err := image(in.SidecarImage)
	if err != nil {
		return nil, fmt.Errorf("sidecar image: %w", err)
	}
	extra := make([]any, 0, len(in.ExtraArgs))
	for _, a := range in.ExtraArgs {
		extra = append(extra, a)
	}
	v := map[string]any{
		"replicaCount": max(in.Replicas, 1),
		"image":        map[string]any{"controller": ctrl, "sidecar": side},
		"extraArgs":    extra,
	}
	if in.ACME != nil {
		acme := map[string]any{"enabled": true, "config": in.ACME}
		if in.ACMECredentials != nil {
			data := map[string]any{}
			for k, val := range in.ACMECredentials {
				data[k] = val
			}
			acme["dnsCredentials"] = map[string]any{"create": true, "stringData": data}
		}
		v["acme"] = acme
	}
	return mergeValues(v, in.Values), nil
}

// splitImage splits "repo[:port]/name:tag" into repository and tag.
func splitImage(ref string) (repo, tag string, err error) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") || i == len(ref)-1 {
		return "", "", fmt.Errorf("image %q: want repository:tag", ref)
	}
	return ref[:i], ref[i+1:], nil
}

// mergeValues returns base with over merged in: maps recursively, other values replaced.
func mergeValues(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeValues(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// Apply installs or upgrades the chart with `helm upgrade --install` against the cluster
// cs talks to. Helm runs on this machine; it reaches the API server through a loopback
// proxy that forwards with cs's own transport (so it works for the node's network
// namespace and for envtest alike). helm is built with hack/helm.sh if it is missing.
func (in Install) Apply(ctx context.Context, cs kubernetes.Interface) error {
	values, err := in.HelmValues()
	if err != nil {
		return err
	}
	data, err := yaml.Marshal(values)
	if err != nil {
		return fmt.Errorf("encode chart values: %w", err)
	}
	chart := in.Chart
	if chart == "" {
		root, err := in.repoRoot()
		if err != nil {
			return err
		}
		chart = filepath.Join(root, "charts", "podtls")
	}
	_, err = in.Helm(ctx, cs, data, "upgrade", "--install", in.release(), chart,
		"--namespace", in.namespace(), "--create-namespace", "--values", "-", "--timeout", "2m")
	return err
}

// Test runs `helm test`: a pod outside the controller's namespace must be injected and its
// sidecar must get a certificate (charts/podtls/templates/tests). A passed test pod is
// deleted (so no --logs, which would find it gone); a failed one is kept for inspection.
func (in Install) Test(ctx context.Context, cs kubernetes.Interface) ([]byte, error) {
	return in.Helm(ctx, cs, nil, "test", in.release(), "--namespace", in.namespace(), "--timeout", "3m")
}

// Uninstall runs `helm uninstall`.
func (in Install) Uninstall(ctx context.Context, cs kubernetes.Interface) error {
	_, err := in.Helm(ctx, cs, nil, "uninstall", in.release(), "--namespace", in.namespace(), "--wait", "--timeout", "2m")
	return err
}

// Helm runs the repository's helm with args against the cluster cs talks to, with stdin
// on its standard input, and returns its combined output. Helm's caches and
// configuration live in a temporary directory.
func (in Install) Helm(ctx context.Context, cs kubernetes.Interface, stdin []byte, args ...string) ([]byte, error) {
	root, err := in.repoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := EnsureHelm(ctx, root)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "podtls-helm-")
	if err != nil {
		return nil, fmt.Errorf("helm temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	server, stop, err := proxyAPIServer(cs)
	if err != nil {
		return nil, err
	}
	defer stop()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kubeconfigFor(server), 0o600); err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", kubeconfig)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig,
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "data"))
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (in Install) repoRoot() (string, error) {
	if in.RepoRoot != "" {
		return in.RepoRoot, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "charts", "podtls", "Chart.yaml")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no charts/podtls in %s or any parent directory", wd)
		}
	}
}

// HelmPath is where hack/helm.sh puts helm, relative to the repository root.
const HelmPath = "bin/tools/helm"

// DefaultKubeVersion is the Kubernetes version podtls is tested on (the Makefile's
// K8S_VERSION default).
const DefaultKubeVersion = "v1.37.2"

// KubeVersion is the version helm commands that ask no cluster (template, lint) must
// render for, passed as --kube-version: K8S_VERSION when set (`make test
// K8S_VERSION=v1.35.4`), else DefaultKubeVersion. Helm's own default, v1.20.0, is
// outside the chart's kubeVersion range and would fail every rendering.
func KubeVersion() string {
	if v := os.Getenv("K8S_VERSION"); v != "" {
		return v
	}
	return DefaultKubeVersion
}

// EnsureHelm returns the path of the repository's helm, building it with hack/helm.sh
// (cached; about 1.5 minutes the first time) when it is missing.
func EnsureHelm(ctx context.Context, repoRoot string) (string, error) {
	bin := filepath.Join(repoRoot, HelmPath)
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "hack", "helm.sh"))
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build helm with hack/helm.sh: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// proxyAPIServer serves plain HTTP on a loopback port and forwards every request to the
// API server with cs's transport (its credentials and dialer). Only requests under a
// random path prefix are forwarded, so other local users cannot borrow the admin
// credentials. It returns the server URL (with the prefix) and a stop function.
func proxyAPIServer(cs kubernetes.Interface) (string, func(), error) {
	rc, ok := cs.CoreV1().RESTClient().(*rest.RESTClient)
	if !ok || rc.Client == nil {
		return "", nil, fmt.Errorf("clientset %T has no REST client to proxy through", cs)
	}
	target := rc.Get().URL()
	target.Path, target.RawQuery = "", ""
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return "", nil, fmt.Errorf("proxy token: %w", err)
	}
	prefix := "/" + hex.EncodeToString(secret)
	transport := rc.Client.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, prefix)
			r.Out.URL.RawPath = ""
			r.Out.Host = target.Host
		},
		Transport:     transport,
		FlushInterval: -1, // watches stream
	}
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != prefix && !strings.HasPrefix(r.URL.Path, prefix+"/") {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("proxy listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "mesh: API proxy: %v\n", err)
		}
	}()
	stop := func() {
		_ = srv.Close()
		<-done
	}
	return (&url.URL{Scheme: "http", Host: ln.Addr().String(), Path: prefix}).String(), stop, nil
}

func kubeconfigFor(server string) []byte {
	return []byte(`apiVersion: v1
kind: Config
clusters:
- name: podtls
  cluster:
    server: ` + server + `
users:
- name: proxy
  user: {}
contexts:
- name: podtls
  context: {cluster: podtls, user: proxy}
current-context: podtls
`)
}

// ServiceAccountUser is the user name the controller authenticates as.
func (in Install) ServiceAccountUser() string {
	return "system:serviceaccount:" + in.namespace() + ":" + controllerName
}

// Can asks the API server whether the controller may do verb on the resource.
func (in Install) Can(ctx context.Context, cs kubernetes.Interface, attr authzv1.ResourceAttributes) (bool, error) {
	sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{User: in.ServiceAccountUser(), ResourceAttributes: &attr},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("subject access review %s %s: %w", attr.Verb, attr.Resource, err)
	}
	return sar.Status.Allowed, nil
}
