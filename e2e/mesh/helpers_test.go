package mesh

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/e2e/cluster"
)

// runCaller runs a pod under serviceAccount that fetches http://127.0.0.1:9001/ through
// its sidecar's outbound listener, and returns it once it has finished. With admitWithin
// > 0 a refused creation (webhook unreachable) is retried that long.
func runCaller(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, serviceAccount, image, timeout string, admitWithin time.Duration) *corev1.Pod {
	t.Helper()
	return runPod(ctx, t, cs, callerPod(name, serviceAccount, image, timeout), admitWithin)
}

// callerPod is the pod runCaller runs.
func callerPod(name, serviceAccount, image, timeout string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"podtls.io/upstreams": upstreams}},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAccount, RestartPolicy: corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullNever,
				Args: []string{"get", "-timeout", timeout, "http://127.0.0.1:9001/"},
			}},
		},
	}
}

// runPod creates pod in the demo namespace and returns it once it has finished. With
// admitWithin > 0 a refused creation (webhook unreachable) is retried that long.
func runPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod *corev1.Pod, admitWithin time.Duration) *corev1.Pod {
	t.Helper()
	name := pod.Name
	t0 := time.Now()
	var refusals []string
	for {
		_, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if time.Since(t0) > admitWithin {
			t.Fatalf("create pod %s (tried for %s): %v", name, time.Since(t0).Round(time.Millisecond), err)
		}
		refusals = append(refusals, fmt.Sprintf("+%s %v", time.Since(t0).Round(time.Millisecond), err))
		time.Sleep(200 * time.Millisecond)
	}
	if len(refusals) > 0 {
		t.Logf("pod %s admitted after %s; refused before:\n%s", name, time.Since(t0).Round(time.Millisecond), strings.Join(refusals, "\n"))
	}
	var got *corev1.Pod
	waitFor(ctx, t, 2*time.Minute, "pod "+name+" to finish", func() bool {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		got = p
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	return got
}

// controllerPods are the live (not terminating) controller pods.
func controllerPods(ctx context.Context, t *testing.T, cs kubernetes.Interface) []corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(systemNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		t.Fatal("no live controller pod")
	}
	return live
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkNativeSidecar: the sidecar is the first init container with restartPolicy Always,
// and it was started (startup probe passed) before the app container started.
func checkNativeSidecar(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != sidecar {
		t.Fatalf("pod %s: first init container is not %s: %v", pod.Name, sidecar, pod.Spec.InitContainers)
	}
	if pod.Annotations["podtls.io/status"] == "" {
		t.Errorf("pod %s: no podtls.io/status annotation recording the injection", pod.Name)
	}
	sc := pod.Spec.InitContainers[0]
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("pod %s: sidecar restartPolicy %v, want Always (native sidecar)", pod.Name, sc.RestartPolicy)
	}
	if sc.StartupProbe == nil {
		t.Errorf("pod %s: sidecar has no startupProbe", pod.Name)
	}
	var side, app *corev1.ContainerStatus
	for i := range pod.Status.InitContainerStatuses {
		if pod.Status.InitContainerStatuses[i].Name == sidecar {
			side = &pod.Status.InitContainerStatuses[i]
		}
	}
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == "app" {
			app = &pod.Status.ContainerStatuses[i]
		}
	}
	if side == nil || app == nil {
		t.Fatalf("pod %s: missing statuses (sidecar %v, app %v)", pod.Name, side != nil, app != nil)
	}
	sideStart, appStart := startedAt(side.State), startedAt(app.State)
	if sideStart.IsZero() || appStart.IsZero() {
		t.Fatalf("pod %s: sidecar %+v, app %+v: both must have started", pod.Name, side.State, app.State)
	}
	if appStart.Before(sideStart) {
		t.Errorf("pod %s: app started %s before its sidecar %s", pod.Name, appStart, sideStart)
	}
	if side.RestartCount != 0 {
		t.Errorf("pod %s: sidecar restarted %d times", pod.Name, side.RestartCount)
	}
}

func startedAt(s corev1.ContainerState) time.Time {
	switch {
	case s.Running != nil:
		return s.Running.StartedAt.Time
	case s.Terminated != nil:
		return s.Terminated.StartedAt.Time
	}
	return time.Time{}
}

// adminClient reaches pod IPs (the sidecar's admin port) from the test process.
func adminClient(c *cluster.Cluster) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.DialContext}}
}

type certInfo struct {
	DNSNames []string `json:"dns_names"`
	URIs     []string `json:"uris"`
}

type certSnapshot struct {
	Ready bool      `json:"ready"`
	Mesh  *certInfo `json:"mesh"`
}

func adminGet(ctx context.Context, client *http.Client, podIP, path string) ([]byte, error) {
	return httpGet(ctx, client, "http://"+net.JoinHostPort(podIP, adminPort)+path)
}

// httpGet GETs u and returns its body (at most 8 MiB); anything but 200 is an error.
func httpGet(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s", u, resp.Status)
	}
	return body, nil
}

func certsOf(ctx context.Context, client *http.Client, podIP string) (*certSnapshot, error) {
	body, err := adminGet(ctx, client, podIP, "/certs")
	if err != nil {
		return nil, err
	}
	var s certSnapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("decode /certs: %w", err)
	}
	return &s, nil
}

// metricsOf reads the sidecar's Prometheus text into "name{labels}" -> value.
func metricsOf(ctx context.Context, client *http.Client, podIP string) (map[string]float64, error) {
	body, err := adminGet(ctx, client, podIP, "/metrics")
	if err != nil {
		return nil, err
	}
	return parseMetrics(body)
}

// controllerReconciles sums controller-runtime's reconcile counter of one
// controller (all results) over the live controller pods' /metrics: a poll
// until it grows proves that a pass ran after a change, where a check right
// after the change would prove nothing.
func controllerReconciles(ctx context.Context, t *testing.T, c *cluster.Cluster, cs kubernetes.Interface, controller string) float64 {
	t.Helper()
	client := adminClient(c)
	prefix := `controller_runtime_reconcile_total{controller="` + controller + `",`
	var n float64
	for _, p := range controllerPods(ctx, t, cs) {
		body, err := httpGet(ctx, client, "http://"+net.JoinHostPort(p.Status.PodIP, controllerMetricsPort)+"/metrics")
		if err != nil {
			continue // a pod not serving yet counts nothing
		}
		m, err := parseMetrics(body)
		if err != nil {
			continue
		}
		for k, v := range m {
			if strings.HasPrefix(k, prefix) {
				n += v
			}
		}
	}
	return n
}

// parseMetrics reads Prometheus text into "name{labels}" -> value.
func parseMetrics(body []byte) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// servedChain is the certificate chain a TLS server presents at addr. The client sends
// no certificate, so an mTLS server refuses the connection afterwards; the chain arrives
// before that.
func servedChain(ctx context.Context, c *cluster.Cluster, addr string) ([]*x509.Certificate, error) {
	raw, err := c.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer raw.Close()
	var chain []*x509.Certificate
	conn := tls.Client(raw, &tls.Config{
		InsecureSkipVerify: true, // verified below against the trust bundle
		ServerName:         prefDNS,
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			chain = cs.PeerCertificates
			return nil
		},
	})
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = conn.HandshakeContext(hctx)
	if len(chain) == 0 {
		return nil, fmt.Errorf("handshake with %s gave no server certificate: %w", addr, errors.Join(err, errors.New("no chain")))
	}
	return chain, nil
}

func logsOf(ctx context.Context, cs kubernetes.Interface, pod, container string) string {
	out, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	if err != nil {
		return fmt.Sprintf("<logs of %s/%s: %v>", pod, container, err)
	}
	return string(out)
}

// dump writes what a failure needs into the test log: pods, descriptions, events and the
// logs of every container in the podtls and demo namespaces.
func dump(t *testing.T, c *cluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(args ...string) {
		out, err := c.RunKubectl(ctx, args...)
		if err != nil {
			t.Logf("kubectl %s: %v", strings.Join(args, " "), err)
			return
		}
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
	run("get", "pods", "-A", "-o", "wide")
	run("get", "events", "-A", "--sort-by=.lastTimestamp")
	run("get", "mutatingwebhookconfiguration", webhookName, "-o", "yaml")
	for _, n := range []string{systemNS, ns} {
		run("describe", "pods", "-n", n)
		pods, err := c.Client.CoreV1().Pods(n).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Logf("list pods of %s: %v", n, err)
			continue
		}
		for _, p := range pods.Items {
			for _, ctr := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
				run("logs", "-n", n, p.Name, "-c", ctr.Name)
			}
		}
	}
	t.Logf("component logs: %s", c.LogDir())
}

// waitFor polls cond every 200 ms until it holds, failing the test after timeout.
func waitFor(ctx context.Context, t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loadAverage is the machine's 1/5/15-minute load, to read timings against.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// buildImages builds the images the node suites run (controller, sidecar, and the echo and
// whoami apps) into a temporary directory and returns their tarballs.
func buildImages(ctx context.Context, t *testing.T, root string) []string {
	t.Helper()
	dir := t.TempDir()
	var images []string
	for _, img := range []struct{ pkg, name string }{
		{"./controller/cmd/podtls-controller", controllerImage},
		{"./sidecar/cmd/podtls-sidecar", sidecarImage},
		{"./e2e/apps/echo", echoImage},
		{"./e2e/mesh/testdata/whoami", whoamiImage},
	} {
		out := filepath.Join(dir, filepath.Base(img.pkg)+".tar")
		if err := cluster.BuildImage(ctx, root, img.pkg, img.name, out); err != nil {
			t.Fatal(err)
		}
		images = append(images, out)
	}
	return images
}

// admissionProbe creates a dry-run pod in the demo namespace every 150 ms (each goes
// through the webhooks, none is stored) and records every refusal and every pod admitted
// without the sidecar.
type admissionProbe struct {
	stopc    chan struct{}
	done     chan struct{}
	probes   int
	refusals []string
}

func startAdmissionProbe(ctx context.Context, cs kubernetes.Interface) *admissionProbe {
	p := &admissionProbe{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t0 := time.Now()
		for i := 0; ; i++ {
			select {
			case <-p.stopc:
				return
			case <-time.After(150 * time.Millisecond):
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("probe-%d", i), Annotations: map[string]string{"podtls.io/upstreams": upstreams}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever}}},
			}
			p.probes++
			got, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			switch {
			case err != nil:
				p.refusals = append(p.refusals, fmt.Sprintf("+%s %v", time.Since(t0).Round(time.Millisecond), err))
			case len(got.Spec.InitContainers) == 0 || got.Spec.InitContainers[0].Name != sidecar:
				p.refusals = append(p.refusals, fmt.Sprintf("+%s admitted without the sidecar", time.Since(t0).Round(time.Millisecond)))
			}
		}
	}()
	return p
}

// stop ends the probe and returns how many creations it tried and what went wrong.
func (p *admissionProbe) stop() (probes int, refusals []string) {
	close(p.stopc)
	<-p.done
	return p.probes, p.refusals
}
