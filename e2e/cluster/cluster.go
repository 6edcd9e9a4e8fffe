// Package cluster runs a real Kubernetes of one or more nodes for end-to-end tests and the
// demo: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and CoreDNS beside the
// first node, and on every node containerd + runc, a kubelet and kube-proxy (iptables), each
// node inside a network namespace of its own joined to the others by a bridge, with private
// directories for every piece of state. Images come from OCI tarballs (see
// hack/ociimage), so no registry and no Docker engine are involved.
//
// Up needs root (network namespaces, mounts, cgroups) and the binaries of
// hack/k8s-binaries.sh and hack/coredns.sh in bin/k8s, plus containerd, runc and the CNI
// plugins of hack/node-deps.sh. Down tears everything down in order; a crashed or killed
// run is cleaned by the next Up.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podtls/podtls/hack/ociimage/oci"
	"github.com/podtls/podtls/internal/gobuild"
)

// DefaultBaseDir holds every run's state, the cross-run lock and the kept logs.
const DefaultBaseDir = "/var/lib/podtls-e2e"

// Options configure Up. The zero value works from inside the repository.
type Options struct {
	// RepoRoot is the podtls checkout (default: found from the working directory upwards).
	RepoRoot string
	// BinDir holds etcd, kube-* and coredns (default: RepoRoot/bin/k8s).
	BinDir string
	// CNIBinDir holds the bridge, host-local, portmap and loopback plugins (default /usr/lib/cni).
	CNIBinDir string
	// BaseDir holds run state and logs (default DefaultBaseDir).
	BaseDir string
	// Images are OCI tarballs imported into every node's containerd before Up returns.
	Images []string
	// Nodes is the number of nodes (default 1, at most MaxNodes).
	Nodes int
	// Logger receives progress (default: discard).
	Logger *slog.Logger
}

// Cluster is a running cluster.
type Cluster struct {
	// Client talks to the API server as a cluster admin (system:masters).
	Client kubernetes.Interface
	// Config is Client's rest.Config; its Dial reaches into the node's namespace.
	Config *rest.Config
	// Kubeconfig is an admin kubeconfig file. Its server address exists only inside the
	// node's namespace: use it with Exec or RunKubectl.
	Kubeconfig string
	// Kubectl is the path of the kubectl binary (may not exist).
	Kubectl string
	// ID names this run: the namespace is podtls-e2e-ID.
	ID string
	// LockWait is how long Up waited for another run on this machine to end (one
	// cluster runs at a time); the bring-up proper is the rest of Up's time.
	LockWait time.Duration

	opts    Options
	netns   string // the first node's namespace, where the control plane runs
	lan     string // the namespace of the bridge joining the nodes
	nodes   []*Node
	paths   paths
	pki     pkiFiles
	log     *slog.Logger
	lock    *os.File
	procs   []*process
	byName  map[string]*process
	extra   []string // names of StartProcess processes, stopped first
	down    sync.Once
	downErr error
}

// binaries Up runs from BinDir.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet", "coredns"}

// hostTools Up runs from PATH.
var hostTools = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "nsenter", "iptables", "sysctl", "go"}

var cniPlugins = []string{"bridge", "host-local", "portmap", "loopback"}

// MissingBinaries lists what Up would need and cannot find (nil when all is there).
func MissingBinaries(opts Options) []string {
	if err := opts.defaults(); err != nil {
		return []string{err.Error()}
	}
	var missing []string
	for _, b := range binaries {
		if !isExecutable(filepath.Join(opts.BinDir, b)) {
			missing = append(missing, filepath.Join(opts.BinDir, b))
		}
	}
	for _, t := range hostTools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	for _, p := range cniPlugins {
		if !isExecutable(filepath.Join(opts.CNIBinDir, p)) {
			missing = append(missing, filepath.Join(opts.CNIBinDir, p))
		}
	}
	return missing
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

func (o *Options) defaults() error {
	if o.RepoRoot == "" {
		root, err := gobuild.RepoRoot()
		if err != nil {
			return err
		}
		o.RepoRoot = root
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Join(o.RepoRoot, "bin", "k8s")
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = "/usr/lib/cni"
	}
	if o.BaseDir == "" {
		o.BaseDir = DefaultBaseDir
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Nodes < 0 || o.Nodes > MaxNodes {
		return fmt.Errorf("cluster: %d nodes asked for, want 1 to %d", o.Nodes, MaxNodes)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Up brings up the cluster and waits until every node is Ready, the default
// ServiceAccount exists, CoreDNS answers and kube-proxy has synced. On error everything
// started so far is torn down again; the logs stay in LogDir for inspection.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("e2e/cluster needs root: it creates network namespaces, mounts and cgroups and runs containerd and a kubelet (run the tests as root, e.g. with sudo)")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if missing := MissingBinaries(opts); len(missing) > 0 {
		return nil, fmt.Errorf("missing binaries (run hack/node-deps.sh, hack/k8s-binaries.sh all, hack/coredns.sh): %s", strings.Join(missing, ", "))
	}
	c := &Cluster{opts: opts, log: opts.Logger, byName: map[string]*process{}}
	if err := c.up(ctx); err != nil {
		c.log.Error("cluster bring-up failed; tearing down", "err", err, "logs", c.paths.logs)
		if derr := c.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, fmt.Errorf("%w (component logs in %s)", err, c.paths.logs)
	}
	return c, nil
}

// LogDir is where every component's log is kept; Down leaves it in place.
func (c *Cluster) LogDir() string { return c.paths.logs }

func (c *Cluster) logf(format string, args ...any) { c.log.Info(fmt.Sprintf(format, args...)) }

func (c *Cluster) up(ctx context.Context) error {
	t0 := time.Now()
	if err := os.MkdirAll(c.opts.BaseDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.opts.BaseDir, err)
	}
	// One cluster per machine at a time: it owns the node cgroup root and the shared CNI
	// and log-link directories. Holding the lock also proves every older run dead.
	lock, err := os.OpenFile(filepath.Join(c.opts.BaseDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open lock: %w", err)
	}
	c.lock = lock
	if err := flockContext(ctx, lock); err != nil {
		return err
	}
	if c.LockWait = time.Since(t0); c.LockWait > time.Second {
		c.logf("waited %s for another cluster run to end", c.LockWait.Round(time.Millisecond))
	}
	t0 = time.Now()
	if err := cleanStale(c.opts.BaseDir, c.logf); err != nil {
		return fmt.Errorf("clean stale runs: %w", err)
	}

	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("run id: %w", err)
	}
	c.ID = hex.EncodeToString(id)
	c.netns = netnsPrefix + c.ID
	c.lan = netnsPrefix + c.ID + "-lan"
	c.paths = newPaths(filepath.Join(c.opts.BaseDir, "run-"+c.ID), filepath.Join(c.opts.BaseDir, "logs", c.ID))
	dirs := []string{c.paths.logs, c.paths.pki, c.paths.etcd, c.paths.apiserver, c.paths.coredns, c.paths.controlFiles}
	for i := range c.opts.Nodes {
		n := newNode(i, c.paths.run, c.ID)
		c.nodes = append(c.nodes, n)
		dirs = append(dirs, n.paths.all()...)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	c.logf("run %s: %d node(s), state %s, logs %s", c.ID, len(c.nodes), c.paths.run, c.paths.logs)
	if err := createLAN(ctx, c.lan); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := createNodeNetns(ctx, n, c.lan); err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		if err := routePods(ctx, n, c.nodes); err != nil {
			return err
		}
	}
	if err := c.writeConfig(); err != nil {
		return err
	}

	// The pause image is built while the control plane starts.
	pauseTar := filepath.Join(c.paths.run, "pause.tar")
	pauseDone := make(chan error, 1)
	go func() {
		pauseDone <- BuildImage(ctx, c.opts.RepoRoot, "./e2e/cluster/pause", PauseImage, pauseTar)
	}()

	if err := c.startControlPlane(ctx); err != nil {
		return err
	}
	c.logf("control plane up after %s", time.Since(t0).Round(time.Millisecond))
	for _, n := range c.nodes {
		if err := c.startNodeRuntime(ctx, n); err != nil {
			return err
		}
	}
	// Images are imported while the kubelet registers the node; no pod can be scheduled
	// before Up returns, so none can miss an image.
	imported := make(chan error, 1)
	go func() {
		if err := <-pauseDone; err != nil {
			imported <- fmt.Errorf("build pause image: %w", err)
			return
		}
		for _, img := range append([]string{pauseTar}, c.opts.Images...) {
			if err := c.ImportImage(ctx, img); err != nil {
				imported <- err
				return
			}
		}
		imported <- nil
	}()
	if err := c.startNodes(ctx); err != nil {
		return errors.Join(err, <-imported)
	}
	if err := c.waitReady(ctx); err != nil {
		return errors.Join(err, <-imported)
	}
	if err := <-imported; err != nil {
		return err
	}
	c.logf("cluster %s ready after %s", c.ID, time.Since(t0).Round(time.Millisecond))
	return nil
}

// flockContext takes an exclusive lock, giving up when ctx ends.
func flockContext(ctx context.Context, f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("another podtls e2e cluster holds %s: %w", f.Name(), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

func (c *Cluster) writeConfig() error {
	server := fmt.Sprintf("https://%s", net.JoinHostPort(NodeIP, fmt.Sprint(apiserverPort)))
	names := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		names[i] = n.Name
	}
	pki, err := writePKI(c.paths.pki, server, names,
		[]net.IP{net.ParseIP(APIServiceIP), net.ParseIP(NodeIP), net.ParseIP("127.0.0.1")}, time.Now())
	if err != nil {
		return err
	}
	c.pki = pki
	c.Kubeconfig = kubeconfigPath(c.paths.pki, "admin")
	c.Kubectl = c.bin("kubectl")

	resolvConf := filepath.Join(c.paths.controlFiles, "resolv.conf")
	files := map[string][]byte{
		filepath.Join(c.paths.controlFiles, "Corefile"): []byte(corefile(kubeconfigPath(c.paths.pki, "coredns"))),
		// Pods with dnsPolicy Default get no nameserver: nothing resolves off the machine.
		resolvConf: []byte("# podtls e2e node: cluster DNS only\n"),
	}
	for _, n := range c.nodes {
		files[filepath.Join(n.paths.containerd, "config.toml")] = []byte(containerdConfig(n.paths, c.opts.CNIBinDir))
		if files[filepath.Join(n.paths.cniConf, "10-podtls-e2e.conflist")], err = cniConfList(n.paths, n.PodCIDR); err != nil {
			return err
		}
		if files[filepath.Join(n.paths.config, "kubelet.yaml")], err = kubeletConfig(n, pki, resolvConf); err != nil {
			return err
		}
		if files[filepath.Join(n.paths.config, "kube-proxy.yaml")], err = kubeProxyConfig(n, kubeconfigPath(c.paths.pki, "kube-proxy")); err != nil {
			return err
		}
	}
	for path, data := range files {
		if err := writeFile(path, data, 0o644); err != nil {
			return err
		}
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load admin kubeconfig: %w", err)
	}
	cfg.Dial = c.DialContext
	cfg.QPS, cfg.Burst = 50, 100
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	return nil
}

// Exec runs a command inside the first node's network namespace (sharing the machine's file
// system) and returns its combined output.
func (c *Cluster) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	argv := append([]string{"--net=" + c.netnsPath(), "--", name}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(out, 2000))
	}
	return out, nil
}

// RunKubectl runs the cluster's kubectl as admin inside the node's namespace.
func (c *Cluster) RunKubectl(ctx context.Context, args ...string) ([]byte, error) {
	return c.Exec(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

// ImportImage imports an OCI image tarball into every node's containerd (namespace
// k8s.io), where pods find it without pulling.
func (c *Cluster) ImportImage(ctx context.Context, tarball string) error {
	t0 := time.Now()
	for _, n := range c.nodes {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.paths.socket, "--namespace", "k8s.io",
			"images", "import", tarball).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import image %s into node %s: %w: %s", tarball, n.Name, err, tail(out, 2000))
		}
	}
	c.logf("imported %s in %s", filepath.Base(tarball), time.Since(t0).Round(time.Millisecond))
	return nil
}

// PackImage wraps the static binary bin into an OCI image tarball out named name, with
// /<base name of bin> as entrypoint, the way hack/ociimage and the Dockerfiles do.
func PackImage(bin, name, out string) error {
	roots := oci.SystemRoots
	if _, err := os.Stat(roots); err != nil {
		roots = ""
	}
	if _, err := oci.WriteFile(out, oci.BinarySpec(name, bin, roots)); err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	return nil
}

// BuildImage compiles a static binary from the main package pkg (relative to repoRoot) and
// wraps it into an OCI tarball named name whose entrypoint is /<last element of pkg>.
func BuildImage(ctx context.Context, repoRoot, pkg, name, out string) error {
	tmp, err := os.MkdirTemp("", "podtls-image-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin, err := gobuild.Binary(ctx, repoRoot, tmp, pkg)
	if err != nil {
		return err
	}
	return PackImage(bin, name, out)
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
