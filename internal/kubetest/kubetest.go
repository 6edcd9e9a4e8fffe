// Package kubetest starts a real Kubernetes control plane (etcd + kube-apiserver, via
// controller-runtime's envtest) for integration tests.
//
// The binaries come from <repo root>/bin/k8s (built by `make envtest-assets`, i.e.
// hack/k8s-binaries.sh), or from $KUBEBUILDER_ASSETS when set. When they are missing, Start
// skips the test, unless PODTLS_REQUIRE_ENVTEST is set (CI sets it): then the test fails.
// Start also skips under `go test -short`.
//
// Unlike plain envtest, the API server runs with the ServiceAccount admission plugin enabled,
// as on a real cluster: pods get serviceAccountName defaulted and the kube-api-access token
// volume added. No controller-manager runs, so nothing creates a namespace's "default"
// ServiceAccount: create namespaces with Env.CreateNamespace, which does that too.
//
// Typical use:
//
//	func TestSomething(t *testing.T) {
//		env := kubetest.Start(t) // stopped automatically in t.Cleanup
//		env.CreateNamespace(t, "demo", map[string]string{"podtls.io/inject": "enabled"})
//		pod := ... ; env.Client.Create(t.Context(), pod)
//		token := env.Token(t, "demo", "default", "podtls-ca", time.Hour, pod)
//		out, err := env.Kubectl(t.Context(), "get", "pods", "-n", "demo")
//	}
//
// To test a mutating webhook, pass WithMutatingWebhooks (or WithWebhooks) with the
// MutatingWebhookConfiguration: envtest rewrites each webhook's clientConfig to
// https://<Env.Webhook.LocalServingHost>:<LocalServingPort>/<service path> with a CA bundle
// for the certificate in Env.Webhook.LocalServingCertDir (tls.crt, tls.key). Then serve the
// handlers there with Env.ServeWebhooks before creating objects the webhook intercepts:
//
//	env := kubetest.Start(t, kubetest.WithMutatingWebhooks(mwc)) // clientConfig.service.path "/mutate"
//	env.ServeWebhooks(t, map[string]http.Handler{"/mutate": &webhook.Admission{Handler: h}})
//
// Each Start costs about 3 s to start (10+ s on a busy 2-core machine) and 1 s to stop: when
// many tests need a control plane, share one started with Launch in TestMain (see Launch)
// and isolate the tests by namespace.
//
// envtest starts etcd and kube-apiserver in their own process groups, so a test binary that
// dies without running its cleanups (killed by `go test -timeout`, a panic, os.Exit, Ctrl-C)
// used to leave them running forever. On Linux each Env has a small reaper process that
// notices within a second and stops them and removes their directories.
package kubetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RequireEnv names the environment variable that turns missing assets into a test failure.
const RequireEnv = "PODTLS_REQUIRE_ENVTEST"

// AssetsEnv is envtest's own variable naming the directory with etcd, kube-apiserver, kubectl.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// binaries are the files envtest and Env.Kubectl need in the assets directory.
var binaries = []string{"etcd", "kube-apiserver", "kubectl"}

// Env is a running control plane and clients for it.
type Env struct {
	// Config authenticates as a cluster admin (system:masters).
	Config *rest.Config
	// Client is a controller-runtime client using Scheme.
	Client client.Client
	// Clientset is the typed client-go client.
	Clientset kubernetes.Interface
	// Scheme knows the built-in types plus whatever WithScheme added.
	Scheme *runtime.Scheme
	// KubeconfigPath is a kubeconfig file (admin, inline certificates) for the real kubectl.
	KubeconfigPath string
	// KubectlPath is the kubectl binary matching the API server's version.
	KubectlPath string
	// AssetsDir is the directory the binaries came from.
	AssetsDir string
	// Webhook holds the installed webhook options; after Start, LocalServingHost,
	// LocalServingPort, LocalServingCertDir and LocalServingCAData say where and how the test
	// must serve the webhooks passed with WithWebhooks.
	Webhook *envtest.WebhookInstallOptions
	// StartTime is how long the control plane took to start.
	StartTime time.Duration

	env    *envtest.Environment
	tmpDir string  // holds the kubeconfig and kubectl's cache
	reaper *reaper // stops the control plane if this process dies without Stop
}

type options struct {
	scheme        *runtime.Scheme
	webhooks      envtest.WebhookInstallOptions
	apiServerArgs map[string][]string
	output        bool
}

// Option configures Start.
type Option func(*options)

// WithScheme sets the scheme of Env.Client (default: client-go's built-in types).
func WithScheme(s *runtime.Scheme) Option {
	return func(o *options) { o.scheme = s }
}

// WithWebhooks installs webhook configurations pointing at a local server; see Env.Webhook.
func WithWebhooks(w envtest.WebhookInstallOptions) Option {
	return func(o *options) { o.webhooks = w }
}

// WithMutatingWebhooks is WithWebhooks for the common case of MutatingWebhookConfigurations
// only.
func WithMutatingWebhooks(cfgs ...*admissionregistrationv1.MutatingWebhookConfiguration) Option {
	return func(o *options) { o.webhooks.MutatingWebhooks = append(o.webhooks.MutatingWebhooks, cfgs...) }
}

// WithAPIServerArg sets a kube-apiserver flag (without the leading "--"), overriding envtest's
// default for it.
func WithAPIServerArg(name string, values ...string) Option {
	return func(o *options) {
		if o.apiServerArgs == nil {
			o.apiServerArgs = map[string][]string{}
		}
		o.apiServerArgs[name] = values
	}
}

// WithControlPlaneOutput copies etcd's and kube-apiserver's output to the test's stdout and
// stderr (also enabled by KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT=true).
func WithControlPlaneOutput() Option {
	return func(o *options) { o.output = true }
}

// ErrAssetsMissing is returned (wrapped) by Launch and AssetsDir when the control-plane
// binaries are not there.
var ErrAssetsMissing = errors.New("control-plane binaries missing")

// Start starts etcd and kube-apiserver and returns clients for them. The control plane is
// stopped in t.Cleanup. It skips or fails the test when the binaries are missing (see the
// package comment).
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("kubetest: needs a kube-apiserver; skipped in -short mode")
	}
	env, err := Launch(opts...)
	if errors.Is(err, ErrAssetsMissing) {
		missingAssets(t, err)
	}
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: control plane up in %s (%s)", env.StartTime.Round(time.Millisecond), env.Config.Host)
	t.Cleanup(func() {
		stop := time.Now()
		if err := env.Stop(); err != nil {
			t.Errorf("kubetest: %v", err)
			return
		}
		t.Logf("kubetest: control plane stopped in %s", time.Since(stop).Round(time.Millisecond))
	})
	return env
}

// Launch is Start without a test: for one control plane shared by a package's tests, started
// in TestMain. The caller must call Stop. When the binaries are missing the error wraps
// ErrAssetsMissing; pair it with Require in the tests:
//
//	var env *kubetest.Env
//
//	func TestMain(m *testing.M) {
//		var err error
//		env, err = kubetest.Launch()
//		if err != nil && !errors.Is(err, kubetest.ErrAssetsMissing) {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		if env != nil {
//			_ = env.Stop()
//		}
//		os.Exit(code)
//	}
//
//	func TestX(t *testing.T) { kubetest.Require(t, env); ... }
func Launch(opts ...Option) (*Env, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.scheme == nil {
		o.scheme = clientgoscheme.Scheme
	}

	// One retry: on a starved machine envtest's fixed 5 s wait for the "default" namespace
	// after the API server reports healthy can run out.
	var te *envtest.Environment
	var cfg *rest.Config
	var start time.Time
	for attempt := 1; ; attempt++ {
		te = newEnvironment(dir, o)
		start = time.Now()
		if cfg, err = te.Start(); err == nil {
			break
		}
		// A partial start can leave etcd or the API server running.
		_ = te.Stop()
		err = fmt.Errorf("start control plane from %s: %w", dir, err)
		if attempt == 2 {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "kubetest: %v; retrying once\n", err)
	}
	api := te.ControlPlane.GetAPIServer()
	env := &Env{
		Config:      cfg,
		Scheme:      o.scheme,
		KubectlPath: filepath.Join(dir, "kubectl"),
		AssetsDir:   dir,
		Webhook:     &te.WebhookInstallOptions,
		StartTime:   time.Since(start),
		env:         te,
	}
	if err := env.connect(te.KubeConfig); err != nil {
		_ = env.Stop()
		return nil, err
	}
	etcd := te.ControlPlane.Etcd
	if env.reaper, err = startReaper(
		[]string{"--data-dir=" + etcd.DataDir, "--cert-dir=" + api.CertDir},
		[]string{etcd.DataDir, api.CertDir, te.WebhookInstallOptions.LocalServingCertDir, env.tmpDir},
	); err != nil {
		// Not fatal: the tests still work, only a crash would leave processes behind.
		fmt.Fprintf(os.Stderr, "kubetest: warning: no reaper for the control plane: %v\n", err)
	}
	return env, nil
}

// newEnvironment configures (without starting) an envtest control plane.
func newEnvironment(dir string, o options) *envtest.Environment {
	te := &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		Scheme:                   o.scheme,
		WebhookInstallOptions:    copyWebhooks(o.webhooks),
		AttachControlPlaneOutput: o.output,
		ControlPlaneStartTimeout: 60 * time.Second, // a loaded 2-core CI box can be slow
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := te.ControlPlane.GetAPIServer()
	// envtest disables the ServiceAccount plugin; real clusters run it, and it changes what
	// a mutating webhook sees (serviceAccountName, the kube-api-access volume, reinvocation).
	api.Configure().Set("disable-admission-plugins", "")
	for name, values := range o.apiServerArgs {
		api.Configure().Set(name, values...)
	}
	if etcdSupportsNoFsync(filepath.Join(dir, "etcd")) {
		// Test data is throwaway; skipping fsync makes etcd much faster on slow disks.
		te.ControlPlane.Etcd = &envtest.Etcd{}
		te.ControlPlane.Etcd.Configure().Set("unsafe-no-fsync", "true")
	}
	return te
}

// copyWebhooks deep-copies the configurations, which envtest rewrites in place (service
// reference -> local URL): the caller's objects stay untouched and a retry starts clean.
func copyWebhooks(w envtest.WebhookInstallOptions) envtest.WebhookInstallOptions {
	mut := make([]*admissionregistrationv1.MutatingWebhookConfiguration, len(w.MutatingWebhooks))
	for i, c := range w.MutatingWebhooks {
		mut[i] = c.DeepCopy()
	}
	val := make([]*admissionregistrationv1.ValidatingWebhookConfiguration, len(w.ValidatingWebhooks))
	for i, c := range w.ValidatingWebhooks {
		val[i] = c.DeepCopy()
	}
	w.MutatingWebhooks, w.ValidatingWebhooks = mut, val
	return w
}

func (e *Env) connect(kubeconfig []byte) error {
	var err error
	if e.Client, err = client.New(e.Config, client.Options{Scheme: e.Scheme}); err != nil {
		return fmt.Errorf("controller-runtime client: %w", err)
	}
	if e.Clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	if e.tmpDir, err = os.MkdirTemp("", "kubetest-"); err != nil {
		return fmt.Errorf("kubeconfig dir: %w", err)
	}
	e.KubeconfigPath = filepath.Join(e.tmpDir, "kubeconfig")
	if err := os.WriteFile(e.KubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// Stop stops the control plane and removes its files. Start's cleanup calls it; call it
// yourself only after Launch.
func (e *Env) Stop() error {
	err := e.env.Stop()
	e.reaper.stop()
	if e.tmpDir != "" {
		if rerr := os.RemoveAll(e.tmpDir); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("stop control plane: %w", err)
	}
	return nil
}

// Require skips or fails t (see the package comment) when env is nil because Launch found
// no binaries, and skips in -short mode.
func Require(t testing.TB, env *Env) {
	t.Helper()
	if testing.Short() {
		t.Skip("kubetest: needs a kube-apiserver; skipped in -short mode")
	}
	if env == nil {
		_, err := AssetsDir()
		if err == nil {
			err = errors.New("no control plane was launched")
		}
		missingAssets(t, err)
	}
}
