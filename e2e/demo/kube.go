package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubectl runs kubectl in the node's namespace and prints its output indented.
func (r *run) kubectl(ctx context.Context, args ...string) error {
	out, err := r.c.RunKubectl(ctx, args...)
	r.printf("%s", indent(string(out)))
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// poll calls cond every 500 ms until it reports done, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (r *run) waitAvailable(ctx context.Context, namespace, name string) error {
	err := poll(ctx, waitDeployment, func() (bool, error) {
		dep, err := r.cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil && dep.Status.AvailableReplicas >= 1 && dep.Status.UnavailableReplicas == 0, nil
	})
	if err != nil {
		if ctx.Err() == nil {
			_ = r.kubectl(ctx, "describe", "pods", "-n", namespace)
		}
		return fmt.Errorf("deployment %s/%s not available: %w", namespace, name, err)
	}
	return nil
}

// appPods lists the running pods of the demo's Deployments by app label.
func (r *run) appPods(ctx context.Context) (map[string]corev1.Pod, error) {
	pods, err := r.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app in (customer,preference,recommendation)"})
	if err != nil {
		return nil, fmt.Errorf("list demo pods: %w", err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out[p.Labels["app"]] = p
		}
	}
	return out, nil
}

func (r *run) podUIDs(ctx context.Context) (map[string]string, error) {
	pods, err := r.appPods(ctx)
	if err != nil {
		return nil, err
	}
	uids := map[string]string{}
	for app, p := range pods {
		uids[app] = string(p.UID)
	}
	return uids, nil
}

// restartCounts sums the restarts of every container (sidecar included) per pod.
func (r *run) restartCounts(ctx context.Context) (map[string]int32, error) {
	pods, err := r.appPods(ctx)
	if err != nil {
		return nil, err
	}
	counts := map[string]int32{}
	for _, p := range pods {
		var n int32
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			n += s.RestartCount
		}
		counts[p.Name] = n
	}
	return counts, nil
}

// podName returns the name of the running pod of app ("" when there is none).
func (r *run) podName(ctx context.Context, app string) string {
	pods, err := r.appPods(ctx)
	if err != nil {
		return ""
	}
	return pods[app].Name
}

// podIP returns the IP of the running pod of app.
func (r *run) podIP(ctx context.Context, app string) (string, error) {
	pods, err := r.appPods(ctx)
	if err != nil {
		return "", err
	}
	p, ok := pods[app]
	if !ok || p.Status.PodIP == "" {
		return "", fmt.Errorf("no running pod of %s", app)
	}
	return p.Status.PodIP, nil
}

// adminGet reads a path of app's sidecar admin server (it listens on the pod IP for probes).
func (r *run) adminGet(ctx context.Context, app, path string) ([]byte, error) {
	ip, err := r.podIP(ctx, app)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: r.c.DialContext}}
	u := "http://" + net.JoinHostPort(ip, adminPort) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s of %s: %w", path, app, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s of %s: %w", path, app, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s of %s: %s", path, app, resp.Status)
	}
	return body, nil
}

// certInfo is the part of the sidecar's /certs entries the demo shows.
type certInfo struct {
	URIs     []string  `json:"uris"`
	DNSNames []string  `json:"dns_names"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

func (r *run) showMeshCert(ctx context.Context, app string) error {
	body, err := r.adminGet(ctx, app, "/certs")
	if err != nil {
		return err
	}
	var snap struct {
		Mesh *certInfo `json:"mesh"`
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		return fmt.Errorf("decode /certs of %s: %w", app, err)
	}
	if snap.Mesh == nil {
		return fmt.Errorf("%s has no mesh certificate", app)
	}
	m := snap.Mesh
	r.printf("    %-15s %s\n    %-15s DNS %s, expires %s (in %s), serial %s\n",
		app, strings.Join(m.URIs, ","), "", strings.Join(m.DNSNames, ", "),
		m.NotAfter.UTC().Format(time.RFC3339), time.Until(m.NotAfter).Round(time.Minute), short(m.Serial))
	return nil
}

// servedSerial opens a TLS handshake to addr inside the node's namespace with SNI
// serverName and returns the serial of the leaf the server presented. The mesh port
// then refuses the handshake for lack of a client certificate, which is fine: the
// server's certificate has been seen by then.
func (r *run) servedSerial(ctx context.Context, addr, serverName string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := r.c.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	var serial string
	conn := tls.Client(raw, &tls.Config{
		ServerName: serverName,
		// Only the presented serial is read here; the demo verifies chains with curl.
		InsecureSkipVerify: true, //nolint:gosec // see above
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				serial = cs.PeerCertificates[0].SerialNumber.Text(16)
			}
			return nil
		},
	})
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	herr := conn.HandshakeContext(ctx)
	if serial == "" {
		return "", fmt.Errorf("handshake with %s (%s): no certificate seen: %v", addr, serverName, herr)
	}
	return serial, nil
}

func (r *run) servedMeshSerial(ctx context.Context, podIP string) (string, error) {
	return r.servedSerial(ctx, net.JoinHostPort(podIP, meshPort), "customer.demo.svc")
}

// runCaller applies a caller pod's manifest, waits for it to finish and returns its log.
func (r *run) runCaller(ctx context.Context, file, name string) (string, corev1.PodPhase, error) {
	if err := r.kubectl(ctx, "apply", "-f", r.example(file)); err != nil {
		return "", "", err
	}
	var phase corev1.PodPhase
	err := poll(ctx, waitDeployment, func() (bool, error) {
		p, err := r.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			phase = p.Status.Phase
		}
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	if err != nil {
		return "", phase, fmt.Errorf("pod %s did not finish: %w", name, err)
	}
	logs, err := r.cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
	if err != nil {
		return "", phase, fmt.Errorf("logs of %s: %w", name, err)
	}
	return string(logs), phase, nil
}

// refusals reads the sidecar metric of handshakes refused for an identity not allowed.
func (r *run) refusals(ctx context.Context, app string) (float64, error) {
	body, err := r.adminGet(ctx, app, "/metrics")
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
	if err := sc.Err(); err != nil {
		return 0, errors.New("read metrics: " + err.Error())
	}
	return total, nil
}
