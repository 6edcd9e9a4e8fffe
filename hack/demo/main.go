// Command demo is `make demo`: it starts a real single-node Kubernetes on this
// machine (e2e/cluster), installs podtls on it as a user would on any cluster,
// labels namespace demo, applies manifests/examples/demo.yaml (customer ->
// preference -> recommendation) and shows what podtls did: the certificates its
// CA issued, a call traced through all three services with the identity each
// sidecar verified, and a caller outside the allow list being refused.
// Needs root (the node runs kubelet, containerd and runc).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/e2e/mesh"
)

const (
	controllerImage = "localhost/podtls/controller:demo"
	sidecarImage    = "localhost/podtls/sidecar:demo"
	hopImage        = "localhost/podtls/hop:demo"
	ns              = "demo"
	adminPort       = "15000"
)

func main() {
	keep := flag.Bool("keep", false, "leave the cluster running at the end (tear down later with Ctrl-C)")
	verbose := flag.Bool("v", false, "log the cluster's progress")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "make demo needs root: it runs a real node (kubelet, containerd, runc) in a network namespace")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, log, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	c     *cluster.Cluster
	cs    kubernetes.Interface
	root  string
	admin *http.Client
	start time.Time
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, log *slog.Logger, keep bool) (err error) {
	d := &demo{start: time.Now()}
	if d.root, err = cluster.RepoRoot(); err != nil {
		return err
	}
	if missing := cluster.MissingBinaries(cluster.Options{RepoRoot: d.root}); len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make node-assets` first (make demo does)", strings.Join(missing, ", "))
	}

	step("Building images without Docker (OCI tarballs for containerd)")
	dir, err := os.MkdirTemp("", "podtls-demo-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	var images []string
	for _, img := range []struct{ pkg, name string }{
		{"./webhook/cmd/podtls-controller", controllerImage},
		{"./sidecar/cmd/podtls-sidecar", sidecarImage},
		{"./e2e/apps/hop", hopImage},
	} {
		out := filepath.Join(dir, filepath.Base(img.pkg)+".tar")
		if err := cluster.BuildImage(ctx, d.root, img.pkg, img.name, out); err != nil {
			return err
		}
		fmt.Printf("    %s\n", img.name)
		images = append(images, out)
	}

	step("Starting a real single-node Kubernetes (etcd, kube-apiserver, controller-manager, scheduler, kube-proxy, CoreDNS, kubelet + containerd + runc) in its own network namespace")
	t := time.Now()
	d.c, err = cluster.Up(ctx, cluster.Options{RepoRoot: d.root, Images: images, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if keep && err == nil {
			fmt.Printf("\nThe cluster keeps running. kubectl inside it:\n    ip netns exec %s %s --kubeconfig %s get pods -A\nPress Ctrl-C to tear it down.\n",
				netnsHint(d.c), d.c.Kubectl, d.c.Kubeconfig)
			<-ctx.Done()
		}
		step("Tearing the cluster down")
		if derr := d.c.Down(); derr != nil && err == nil {
			err = derr
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "component logs: %s\n", d.c.LogDir())
		}
	}()
	d.cs = d.c.Client
	d.admin = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.c.DialContext}}
	fmt.Printf("    node Ready in %s\n", time.Since(t).Round(100*time.Millisecond))

	step("Installing podtls: podtls-controller (admission webhook + internal CA) in podtls-system")
	t = time.Now()
	in := mesh.Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever}
	if err := in.Apply(ctx, d.cs); err != nil {
		return err
	}
	if err := d.waitAvailable(ctx, "podtls-system", "podtls-controller", 3*time.Minute); err != nil {
		return err
	}
	fmt.Printf("    controller available in %s (it generated its CA and patched its webhook's caBundle)\n", time.Since(t).Round(100*time.Millisecond))

	step("kubectl create namespace demo && kubectl label namespace demo podtls.io/inject=enabled")
	if err := d.kubectl(ctx, "create", "namespace", ns); err != nil {
		return err
	}
	if err := d.kubectl(ctx, "label", "namespace", ns, "podtls.io/inject=enabled"); err != nil {
		return err
	}

	step("kubectl apply -f manifests/examples/demo.yaml   (customer -> preference -> recommendation)")
	t = time.Now()
	if err := d.kubectl(ctx, "apply", "-f", filepath.Join(d.root, "manifests/examples/demo.yaml")); err != nil {
		return err
	}
	for _, name := range []string{"customer", "preference", "recommendation"} {
		if err := d.waitAvailable(ctx, ns, name, 3*time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("    all three available in %s; every pod got the sidecar as a native sidecar:\n", time.Since(t).Round(100*time.Millisecond))
	if err := d.kubectl(ctx, "get", "pods", "-n", ns, "-o",
		"custom-columns=POD:.metadata.name,SIDECAR:.spec.initContainers[0].name,RESTART:.spec.initContainers[0].restartPolicy,APP:.spec.containers[0].name,STATUS:.status.phase"); err != nil {
		return err
	}

	step("The mesh certificates the CA issued (each sidecar's /certs; keys never left the pods)")
	for _, name := range []string{"customer", "preference", "recommendation"} {
		if err := d.showCert(ctx, name); err != nil {
			return err
		}
	}

	step("kubectl apply -f manifests/examples/visitor.yaml   (visitor calls customer through its sidecar)")
	out, phase, err := d.runCaller(ctx, "visitor.yaml", "visitor")
	if err != nil {
		return err
	}
	fmt.Println("    each line: a service, and the caller identity its sidecar verified over mTLS")
	fmt.Print(indent(out))
	if phase != corev1.PodSucceeded {
		return fmt.Errorf("visitor ended %s, want Succeeded", phase)
	}

	step("kubectl apply -f manifests/examples/intruder.yaml   (intruder calls preference; only customer is allowed)")
	out, phase, err = d.runCaller(ctx, "intruder.yaml", "intruder")
	if err != nil {
		return err
	}
	fmt.Printf("    intruder pod: %s; its last words:\n%s", phase, indent(lastLine(out)))
	refused, err := d.refusals(ctx, "preference")
	if err != nil {
		return err
	}
	fmt.Printf("    preference's sidecar refused %v handshake(s) with reason identity_not_allowed; its app saw none of them\n", refused)
	if phase != corev1.PodFailed || refused < 1 {
		return fmt.Errorf("intruder was not refused (pod %s, %v refusals)", phase, refused)
	}

	step("Done in %s", time.Since(d.start).Round(time.Second))
	return nil
}

func (d *demo) kubectl(ctx context.Context, args ...string) error {
	out, err := d.c.RunKubectl(ctx, args...)
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (d *demo) waitAvailable(ctx context.Context, namespace, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		dep, err := d.cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && dep.Status.AvailableReplicas >= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			d.kubectl(ctx, "describe", "pods", "-n", namespace)
			return fmt.Errorf("deployment %s/%s not available after %s", namespace, name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// podIP returns the IP of the first running pod of app.
func (d *demo) podIP(ctx context.Context, app string) (string, error) {
	pods, err := d.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return "", fmt.Errorf("list pods of %s: %w", app, err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			return p.Status.PodIP, nil
		}
	}
	return "", fmt.Errorf("no running pod of %s", app)
}

func (d *demo) adminGet(ctx context.Context, app, path string) ([]byte, error) {
	ip, err := d.podIP(ctx, app)
	if err != nil {
		return nil, err
	}
	u := "http://" + net.JoinHostPort(ip, adminPort) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.admin.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s of %s: %w", path, app, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s of %s: %s %v", path, app, resp.Status, err)
	}
	return body, nil
}

func (d *demo) showCert(ctx context.Context, app string) error {
	body, err := d.adminGet(ctx, app, "/certs")
	if err != nil {
		return err
	}
	var snap struct {
		Mesh *struct {
			URIs     []string  `json:"uris"`
			DNSNames []string  `json:"dns_names"`
			Serial   string    `json:"serial"`
			NotAfter time.Time `json:"not_after"`
			Issuer   string    `json:"issuer"`
		} `json:"mesh"`
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		return fmt.Errorf("decode /certs of %s: %w", app, err)
	}
	if snap.Mesh == nil {
		return fmt.Errorf("%s has no mesh certificate", app)
	}
	m := snap.Mesh
	fmt.Printf("    %-15s %s\n    %-15s DNS %s, expires %s (in %s), serial %.16s...\n",
		app, strings.Join(m.URIs, ","), "", strings.Join(m.DNSNames, ", "),
		m.NotAfter.UTC().Format(time.RFC3339), time.Until(m.NotAfter).Round(time.Minute), m.Serial)
	return nil
}

// runCaller applies a caller pod's manifest, waits for it to finish and returns its log.
func (d *demo) runCaller(ctx context.Context, file, name string) (string, corev1.PodPhase, error) {
	if err := d.kubectl(ctx, "apply", "-f", filepath.Join(d.root, "manifests/examples", file)); err != nil {
		return "", "", err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		p, err := d.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			logs, err := d.cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
			if err != nil {
				return "", p.Status.Phase, fmt.Errorf("logs of %s: %w", name, err)
			}
			return string(logs), p.Status.Phase, nil
		}
		if time.Now().After(deadline) {
			return "", "", errors.New(name + " did not finish within 3 minutes")
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// refusals reads the sidecar metric of handshakes refused for an identity not allowed.
func (d *demo) refusals(ctx context.Context, app string) (float64, error) {
	body, err := d.adminGet(ctx, app, "/metrics")
	if err != nil {
		return 0, err
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "podtls_sidecar_handshake_failures_total{") && strings.Contains(line, `reason="identity_not_allowed"`) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	return total, nil
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

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1] + "\n"
}

func netnsHint(c *cluster.Cluster) string {
	return "podtls-e2e-" + c.ID
}
