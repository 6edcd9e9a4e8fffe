// Package demo is `make demo` as a library: it starts the real single-node cluster
// (e2e/cluster), installs podtls on it as a user would on any cluster, labels namespace
// demo, applies manifests/examples/demo.yaml (customer -> preference -> recommendation)
// and shows what podtls did: a call traced through all three services with the identity
// each sidecar verified, a caller outside the allow list refused, and certificates
// rotated without a restart. hack/demo prints it for people; demo_test.go runs the same
// flow in CI and asserts on the Result.
//
// Run needs root (the node runs kubelet, containerd and runc) and the node binaries.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/gobuild"
)

// Images the demo builds and imports into the node.
const (
	ControllerImage = "localhost/podtls/controller:demo"
	SidecarImage    = "localhost/podtls/sidecar:demo"
	HopImage        = "localhost/podtls/hop:demo"
)

const (
	ns             = "demo"
	systemNS       = "podtls-system"
	adminPort      = "15000"
	meshPort       = "8443"
	sidecarName    = contract.ContainerName
	waitDeployment = 3 * time.Minute
)

// apps are the example's Deployments, in call order.
var apps = []string{"customer", "preference", "recommendation"}

// Options configure Run. The zero value runs the whole demo from inside the repository.
type Options struct {
	// RepoRoot is the podtls checkout (default: found from the working directory).
	RepoRoot string
	// Keep leaves everything running after a successful run until ctx ends, printing
	// how to reach it.
	Keep bool
	// Logger receives the cluster's progress (default: discard).
	Logger *slog.Logger
	// ACME selects the public edge (an ACME certificate from Pebble for customer).
	ACME ACMEMode
}

// ACMEMode says whether Run shows the public edge, which needs BIND9 and Pebble
// (hack/acme-deps.sh).
type ACMEMode int

const (
	// ACMEAuto shows the edge when BIND9 and Pebble are installed.
	ACMEAuto ACMEMode = iota
	// ACMERequired fails when they are missing.
	ACMERequired
	// ACMEOff shows the mesh only.
	ACMEOff
)

// Timing is how long one step took.
type Timing struct {
	Step string
	Took time.Duration
}

// Rotation is a certificate seen before and after a forced renewal.
type Rotation struct {
	// Before and After are serials (hex) of the certificate a new TLS handshake got.
	Before, After string
	// Took is from asking for the renewal to the new serial being served.
	Took time.Duration
}

// Rotated reports a completed rotation.
func (r Rotation) Rotated() bool { return r.Before != "" && r.After != "" && r.Before != r.After }

// Result is what a run showed, for tests to assert on.
type Result struct {
	// Timings of every step in order, and the whole run.
	Timings []Timing
	Total   time.Duration
	// Trace is the visitor's answer: one line per service with the identity its
	// sidecar verified.
	Trace string
	// IntruderPhase is the refused caller's pod phase when the refusal was seen,
	// IntruderError the failure its app logged, Refusals the identity_not_allowed
	// handshake failures preference's sidecar counted, IntruderReachedApp whether
	// preference's app logged a request from it.
	IntruderPhase      corev1.PodPhase
	IntruderError      string
	Refusals           float64
	IntruderReachedApp bool
	// MeshRotation is customer's mesh certificate around `podtls-sidecar renew`.
	MeshRotation Rotation
	// ACME reports whether the public edge ran. EdgeTrace is then curl's answer for
	// https://customer.demo.example.test/ (verified against Pebble's root), and
	// EdgeRotation the certificate served for that name around a forced renewal.
	// Record is dig's answer for that name from BIND, published by podtls.
	ACME         bool
	EdgeTrace    string
	EdgeRotation Rotation
	Record       string
	// Restarts is every demo pod's total container restart count at the end, and
	// PodsReplaced whether any pod of the three Deployments was replaced during the run.
	Restarts     map[string]int32
	PodsReplaced bool
	// Status is `podtls status -n demo --live`'s output; CheckOutput and
	// CheckExit are `podtls check`'s (exit 0: every line green or yellow).
	Status      string
	CheckOutput string
	CheckExit   int
}

// Timing returns the duration of the named step (0 when it did not run).
func (r *Result) Timing(step string) time.Duration {
	for _, t := range r.Timings {
		if t.Step == step {
			return t.Took
		}
	}
	return 0
}

// Step names, in order.
const (
	StepBuild    = "build images"
	StepCluster  = "start the node"
	StepACME     = "start BIND + Pebble"
	StepInstall  = "helm install"
	StepApply    = "apply the example"
	StepTrace    = "traced call"
	StepEdge     = "public edge"
	StepRefused  = "refused caller"
	StepMeshRot  = "mesh rotation"
	StepEdgeRot  = "ACME rotation"
	StepRestarts = "restart counts"
	StepCLI      = "podtls status/check"
)

type run struct {
	opts  Options
	out   io.Writer
	res   *Result
	c     *cluster.Cluster
	cs    kubernetes.Interface
	acme  *acmetest.Env // nil without the public edge
	dir   string        // scratch files (images, values, Pebble's root)
	start time.Time
	pods  map[string]string // app -> pod UID at the start

	appliedAt time.Time
	nodePort  string // customer-public's node port
	rootFile  string // Pebble's root, PEM
}

// Run runs the demo, writing its progress for people to out, and returns what it
// showed. Everything it started is torn down before it returns, also when ctx ends
// (Ctrl-C); with Options.Keep, only once ctx ends.
func Run(ctx context.Context, opts Options, out io.Writer) (res *Result, err error) {
	r := &run{opts: opts, out: out, res: &Result{Restarts: map[string]int32{}}, start: time.Now()}
	if r.opts.RepoRoot == "" {
		if r.opts.RepoRoot, err = gobuild.RepoRoot(); err != nil {
			return nil, err
		}
	}
	if r.opts.Logger == nil {
		r.opts.Logger = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo needs root: it runs a real node (kubelet, containerd, runc) in a network namespace")
	}
	if missing := cluster.MissingBinaries(cluster.Options{RepoRoot: r.opts.RepoRoot}); len(missing) > 0 {
		return nil, fmt.Errorf("missing %s: run `make node-assets` first (make demo does)", strings.Join(missing, ", "))
	}
	defer func() {
		if r.res.Total == 0 {
			r.res.Total = time.Since(r.start)
		}
		res = r.res
	}()

	if r.dir, err = os.MkdirTemp("", "podtls-demo-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(r.dir)

	var images []string
	if err := r.step(StepBuild, "Building the binaries (controller, sidecar, demo app, podtls CLI; first time ~2 min, then seconds) and their images without Docker (OCI tarballs for containerd)", func() error {
		images, err = r.buildImages(ctx, r.dir)
		return err
	}); err != nil {
		return nil, err
	}

	if err := r.step(StepCluster, "Starting a real single-node Kubernetes (etcd, kube-apiserver, controller-manager, scheduler, kube-proxy, CoreDNS, kubelet + containerd + runc) in its own network namespace", func() error {
		r.c, err = cluster.Up(ctx, cluster.Options{RepoRoot: r.opts.RepoRoot, Images: images, Logger: r.opts.Logger})
		return err
	}); err != nil {
		return nil, err
	}
	defer func() {
		if r.opts.Keep && err == nil {
			r.printKeep()
			<-ctx.Done()
		}
		r.header("Tearing everything down")
		t := time.Now()
		if r.acme != nil {
			r.acme.Close() // BIND and Pebble run in the node's namespace: stop them first
		}
		if derr := r.c.Down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", derr))
			r.printf("    tear-down failed after %s: %v\n", round(time.Since(t)), derr)
		} else {
			what := "node and control plane"
			if r.acme != nil {
				what += ", BIND and Pebble"
			}
			r.printf("    down in %s: %s stopped; mounts, cgroups and the namespace removed\n", round(time.Since(t)), what)
		}
		if err != nil {
			r.printf("    component logs: %s\n", r.c.LogDir())
		}
	}()
	r.cs = r.c.Client

	if r.opts.ACME != ACMEOff {
		err := r.step(StepACME, "Starting BIND9 (RFC 2136, TSIG) and Pebble (ACME) inside the node's network namespace", func() error {
			return r.startACME(ctx)
		})
		switch {
		case errors.Is(err, acmetest.ErrAssetsMissing) && r.opts.ACME == ACMEAuto:
			r.printf("    skipped: %v\n    the demo continues without the public edge\n", err)
		case err != nil:
			return nil, err
		}
	}
	r.res.ACME = r.acme != nil

	type step struct {
		name, title string
		fn          func(context.Context) error
	}
	steps := []step{
		{StepInstall, "Installing podtls with Helm: podtls-controller (admission webhook, internal CA, ACME manager) in " + systemNS, r.install},
		{StepApply, "kubectl label namespace demo podtls.io/inject=enabled && kubectl apply -f manifests/examples/demo.yaml   (customer -> preference -> recommendation)", r.apply},
		{StepTrace, "kubectl apply -f manifests/examples/visitor.yaml   (visitor calls customer through its sidecar)", r.trace},
	}
	if r.acme != nil {
		steps = append(steps, step{StepEdge, "The public edge: kubectl expose deployment customer --type NodePort; curl https://" + PublicHost + "/", r.edge})
	}
	steps = append(steps,
		step{StepRefused, "kubectl apply -f manifests/examples/intruder.yaml   (intruder calls preference; only customer is allowed)", r.refused},
		step{StepMeshRot, "Rotating customer's mesh certificate: kubectl -n demo exec deploy/customer -c " + sidecarName + " -- /podtls-sidecar renew", r.meshRotation},
	)
	if r.acme != nil {
		steps = append(steps, step{StepEdgeRot, "Renewing the ACME certificate: kubectl -n demo annotate secret " + contract.ExternalSecretName([]string{PublicHost}) + " " + "podtls.io/force-renew=$(date +%s)", r.edgeRotation})
	}
	steps = append(steps, step{StepRestarts, "No pod restarted", r.restarts},
		step{StepCLI, "What the podtls command line sees: podtls status -n demo --live; podtls check", r.cli})
	for _, s := range steps {
		if err := r.step(s.name, s.title, func() error { return s.fn(ctx) }); err != nil {
			return nil, err
		}
	}
	r.summary()
	return r.res, nil
}

// step prints a header, runs fn and records its duration.
func (r *run) step(name, title string, fn func() error) error {
	r.header(title)
	t := time.Now()
	err := fn()
	took := time.Since(t)
	r.res.Timings = append(r.res.Timings, Timing{Step: name, Took: took})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.printf("    (%s)\n", round(took))
	return nil
}

func (r *run) header(title string) {
	r.printf("\n==> [%s] %s\n", round(time.Since(r.start)), title)
}

func (r *run) printf(format string, args ...any) {
	fmt.Fprintf(r.out, format, args...)
}

// buildImages builds every binary the demo uses, the podtls CLI included, with one go
// build before the cluster starts, then wraps the three in-cluster ones into images.
func (r *run) buildImages(ctx context.Context, dir string) ([]string, error) {
	specs := []struct{ pkg, name string }{
		{"./controller/cmd/podtls-controller", ControllerImage},
		{"./sidecar/cmd/podtls-sidecar", SidecarImage},
		{"./e2e/apps/hop", HopImage},
	}
	pkgs := []string{cliPkg}
	for _, s := range specs {
		pkgs = append(pkgs, s.pkg)
	}
	if err := gobuild.Binaries(ctx, r.opts.RepoRoot, dir, pkgs...); err != nil {
		return nil, err
	}
	images := make([]string, len(specs))
	for i, img := range specs {
		base := filepath.Base(img.pkg)
		images[i] = filepath.Join(dir, base+".tar")
		if err := cluster.PackImage(filepath.Join(dir, base), img.name, images[i]); err != nil {
			return nil, err
		}
		r.printf("    %s\n", img.name)
	}
	r.printf("    %s (the podtls command)\n", filepath.Join(dir, filepath.Base(cliPkg)))
	return images, nil
}

func (r *run) install(ctx context.Context) error {
	if err := r.helmInstall(ctx, r.dir); err != nil {
		return err
	}
	if err := r.waitAvailable(ctx, systemNS, "podtls-controller"); err != nil {
		return err
	}
	r.printf("    controller available: it generated its CA and patched its webhook's caBundle\n")
	return nil
}

func (r *run) apply(ctx context.Context) error {
	if err := r.kubectl(ctx, "create", "namespace", ns); err != nil {
		return err
	}
	if err := r.kubectl(ctx, "label", "namespace", ns, "podtls.io/inject=enabled"); err != nil {
		return err
	}
	r.appliedAt = time.Now()
	if err := r.kubectl(ctx, "apply", "-f", r.example("demo.yaml")); err != nil {
		return err
	}
	for _, app := range apps {
		if err := r.waitAvailable(ctx, ns, app); err != nil {
			return err
		}
	}
	var err error
	if r.pods, err = r.podUIDs(ctx); err != nil {
		return err
	}
	r.printf("    all three available; every pod got the sidecar as a native sidecar (init container, restartPolicy Always):\n")
	if err := r.kubectl(ctx, "get", "pods", "-n", ns, "-o",
		"custom-columns=POD:.metadata.name,SIDECAR:.spec.initContainers[0].name,RESTART:.spec.initContainers[0].restartPolicy,APP:.spec.containers[0].name,STATUS:.status.phase"); err != nil {
		return err
	}
	r.printf("    the mesh certificates the CA issued (each sidecar's /certs; the keys never left the pods):\n")
	for _, app := range apps {
		if err := r.showMeshCert(ctx, app); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) trace(ctx context.Context) error {
	out, phase, err := r.runCaller(ctx, "visitor.yaml", "visitor")
	if err != nil {
		return err
	}
	r.printf("    each line: a service, and the caller identity its sidecar verified over mTLS\n")
	r.printf("%s", indent(out))
	if phase != corev1.PodSucceeded {
		return fmt.Errorf("visitor ended %s, want Succeeded", phase)
	}
	r.res.Trace = out
	return nil
}

// refused runs a caller that preference's allow list does not name. Its sidecar's
// handshakes are refused; once the refusal is counted and the caller has logged its
// failure, the pod (which would keep retrying for a while) is deleted.
func (r *run) refused(ctx context.Context) error {
	if err := r.kubectl(ctx, "apply", "-f", r.example("intruder.yaml")); err != nil {
		return err
	}
	var lastErr string
	err := poll(ctx, waitDeployment, func() (bool, error) {
		p, err := r.cs.CoreV1().Pods(ns).Get(ctx, "intruder", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		r.res.IntruderPhase = p.Status.Phase
		if p.Status.Phase == corev1.PodSucceeded {
			return false, errors.New("the intruder's call succeeded")
		}
		if logs, err := r.cs.CoreV1().Pods(ns).GetLogs("intruder", &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx); err == nil {
			lastErr = lastError(string(logs))
		}
		if r.res.Refusals, err = r.refusals(ctx, "preference"); err != nil {
			return false, nil
		}
		return lastErr != "" && r.res.Refusals >= 1, nil
	})
	if err != nil {
		return fmt.Errorf("intruder: %w", err)
	}
	r.res.IntruderError = lastErr
	r.printf("    the intruder's app, calling 127.0.0.1:9001 (its sidecar dials preference with mTLS):\n        %s\n", lastErr)
	r.printf("    preference's sidecar refused %v handshake(s) with reason identity_not_allowed (podtls_sidecar_handshake_failures_total)\n", r.res.Refusals)
	logs, err := r.cs.CoreV1().Pods(ns).GetLogs(r.podName(ctx, "preference"), &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("logs of preference: %w", err)
	}
	r.res.IntruderReachedApp = strings.Contains(string(logs), "/sa/intruder")
	if r.res.IntruderReachedApp {
		return errors.New("preference's app saw a request of the intruder")
	}
	r.printf("    preference's app log names no request from the intruder: it never got a byte\n")
	return r.kubectl(ctx, "delete", "pod", "-n", ns, "intruder", "--wait=false")
}

// lastError returns the err field of the last JSON log line of hop that has one.
func lastError(logs string) string {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var entry struct {
			Err string `json:"err"`
		}
		if json.Unmarshal([]byte(lines[i]), &entry) == nil && entry.Err != "" {
			return entry.Err
		}
	}
	return ""
}

func (r *run) meshRotation(ctx context.Context) error {
	ip, err := r.podIP(ctx, "customer")
	if err != nil {
		return err
	}
	before, err := r.servedMeshSerial(ctx, ip)
	if err != nil {
		return err
	}
	r.printf("    customer:8443 serves mesh certificate serial %s\n", short(before))
	t := time.Now()
	out, err := r.c.RunKubectl(ctx, "exec", "-n", ns, "deploy/customer", "-c", sidecarName, "--", "/podtls-sidecar", "renew")
	r.printf("%s", indent(string(out)))
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	var after string
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		s, err := r.servedMeshSerial(ctx, ip)
		after = s
		return err == nil && s != before, nil
	}); err != nil {
		return fmt.Errorf("customer still serves serial %s after the renewal: %w", before, err)
	}
	r.res.MeshRotation = Rotation{Before: before, After: after, Took: time.Since(t)}
	r.printf("    the next handshake got serial %s (new key, generated in the pod) after %s\n", short(after), round(r.res.MeshRotation.Took))
	return nil
}

func (r *run) restarts(ctx context.Context) error {
	pods, err := r.podUIDs(ctx)
	if err != nil {
		return err
	}
	for app, uid := range r.pods {
		if pods[app] != uid {
			r.res.PodsReplaced = true
			r.printf("    %s's pod was replaced\n", app)
		}
	}
	if err := r.kubectl(ctx, "get", "pods", "-n", ns, "-l", "app in (customer,preference,recommendation)", "-o",
		"custom-columns=POD:.metadata.name,SIDECAR-RESTARTS:.status.initContainerStatuses[0].restartCount,APP-RESTARTS:.status.containerStatuses[0].restartCount"); err != nil {
		return err
	}
	if r.res.Restarts, err = r.restartCounts(ctx); err != nil {
		return err
	}
	for pod, n := range r.res.Restarts {
		if n != 0 {
			return fmt.Errorf("pod %s restarted %d times", pod, n)
		}
	}
	if r.res.PodsReplaced {
		return errors.New("a demo pod was replaced during the run")
	}
	return nil
}

func (r *run) summary() {
	r.res.Total = time.Since(r.start)
	r.header(fmt.Sprintf("Done in %s", round(r.res.Total)))
	r.printf("    shown: customer -> preference -> recommendation over mTLS, each sidecar naming the identity it verified;\n")
	if r.res.ACME {
		r.printf("           https://%s/ with a certificate from ACME (Pebble, DNS-01 on BIND), verified by curl,\n", PublicHost)
		r.printf("           and its address record published on BIND by podtls (podtls.io/dns-records: nodes);\n")
	}
	r.printf("           a caller outside the allow list refused in the handshake (its request never reached the app);\n")
	r.printf("           the mesh certificate rotated (serial %s -> %s, %s)", short(r.res.MeshRotation.Before), short(r.res.MeshRotation.After), round(r.res.MeshRotation.Took))
	if r.res.ACME {
		r.printf(",\n           the ACME certificate renewed and served (serial %s -> %s, %s)", short(r.res.EdgeRotation.Before), short(r.res.EdgeRotation.After), round(r.res.EdgeRotation.Took))
	}
	r.printf(";\n           no pod restarted, none replaced\n")
	r.printf("    timings:\n")
	for _, t := range r.res.Timings {
		r.printf("      %-20s %8s\n", t.Step, round(t.Took))
	}
	r.printf(`
    On a real cluster (Kubernetes >= 1.29), with a DNS provider for your domain:
      kubectl create namespace podtls-system
      kubectl -n podtls-system create secret generic podtls-dns-credentials --from-literal=...   # the provider's lego variables
      helm install podtls charts/podtls -n podtls-system -f manifests/examples/issuers/route53.yaml  # or cloudflare, gcloud, rfc2136
      kubectl label namespace demo podtls.io/inject=enabled
      kubectl apply -f manifests/examples/demo.yaml                    # set podtls.io/external-hosts to a name of yours
      kubectl -n demo exec deploy/customer -c podtls-sidecar -- /podtls-sidecar renew     # rotate a mesh certificate now
      kubectl -n demo annotate secret %s podtls.io/force-renew=$(date +%%s)   # renew an ACME certificate now
`, contract.ExternalSecretName([]string{PublicHost}))
}

func (r *run) printKeep() {
	netns := "podtls-e2e-" + r.c.ID
	r.printf("\nEverything keeps running. Inside the node's network namespace:\n")
	r.printf("    ip netns exec %s %s --kubeconfig %s get pods -A\n", netns, r.c.Kubectl, r.c.Kubeconfig)
	if r.res.ACME {
		r.printf("    ip netns exec %s curl --cacert %s --resolve %s:%s:%s https://%s:%s/\n",
			netns, r.rootFile, PublicHost, r.nodePort, cluster.NodeIP, PublicHost, r.nodePort)
	}
	r.printf("Press Ctrl-C to tear it down.\n")
}

func (r *run) example(name string) string {
	return filepath.Join(r.opts.RepoRoot, "manifests", "examples", name)
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func short(serial string) string {
	if len(serial) > 16 {
		return serial[:16] + "..."
	}
	return serial
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}
