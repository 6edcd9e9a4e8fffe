package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/poll"
)

// admissions creates pods in the labelled namespace with dry-run=All, one after the other
// (paced by poll.Interval), until stopped: each goes through the webhook (failurePolicy
// Fail there) without being stored. It counts them by the sidecar image they were
// injected with and records every failure.
type admissions struct {
	mu    sync.Mutex
	stats admissionStats

	quit chan struct{}
	done chan struct{}
}

type admissionStats struct {
	total     int
	bySidecar map[string]int // injected sidecar image -> admissions
	failures  []admissionFailure
	// streak counts the admissions in a row injected with the newest sidecar image.
	streak int
}

// admissionFailure is a refused creation, or one admitted without a sidecar.
type admissionFailure struct {
	at  time.Time
	msg string
}

func (f admissionFailure) String() string { return f.at.Format("15:04:05.000") + " " + f.msg }

func startAdmissions(ctx context.Context, cs kubernetes.Interface, newSidecar string) *admissions {
	a := &admissions{stats: admissionStats{bySidecar: map[string]int{}}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		tick := time.NewTicker(poll.Interval)
		defer tick.Stop()
		t0 := time.Now()
		for i := 0; ; i++ {
			select {
			case <-a.quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("admission-%d", i),
					Annotations: map[string]string{"podtls.io/inbound": "8443:8080"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: whoamiImage, ImagePullPolicy: corev1.PullNever}}},
			}
			got, err := cs.CoreV1().Pods(upgradeNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			at := time.Now()
			a.mu.Lock()
			a.stats.total++
			switch {
			case err != nil:
				if ctx.Err() == nil {
					a.stats.failures = append(a.stats.failures, admissionFailure{at, fmt.Sprintf("+%s %s: %v", at.Sub(t0).Round(time.Millisecond), pod.Name, err)})
				}
				a.stats.streak = 0
			case len(got.Spec.InitContainers) == 0 || got.Spec.InitContainers[0].Name != sidecarName:
				a.stats.failures = append(a.stats.failures, admissionFailure{at, fmt.Sprintf("+%s %s: admitted without the sidecar", at.Sub(t0).Round(time.Millisecond), pod.Name)})
				a.stats.streak = 0
			default:
				img := got.Spec.InitContainers[0].Image
				a.stats.bySidecar[img]++
				if img == newSidecar {
					a.stats.streak++
				} else {
					a.stats.streak = 0
				}
			}
			a.mu.Unlock()
		}
	}()
	return a
}

// snapshot is a copy of the counts so far.
func (a *admissions) snapshot() admissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.bySidecar = maps.Clone(s.bySidecar)
	s.failures = append([]admissionFailure(nil), s.failures...)
	return s
}

// stop ends the creations and returns the final counts.
func (a *admissions) stop() admissionStats {
	close(a.quit)
	<-a.done
	return a.snapshot()
}

// exits records when each controller pod running a given image was first seen
// terminating: the moment its endpoint leaves the Service and the kubelet signals it.
type exits struct {
	mu sync.Mutex
	at map[string]time.Time
}

func watchExits(ctx context.Context, cs kubernetes.Interface, image string) (*exits, error) {
	w, err := cs.CoreV1().Pods("podtls-system").Watch(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
	if err != nil {
		return nil, fmt.Errorf("watch controller pods: %w", err)
	}
	e := &exits{at: map[string]time.Time{}}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.DeletionTimestamp == nil || p.Spec.Containers[0].Image != image {
				continue
			}
			e.mu.Lock()
			if _, seen := e.at[p.Name]; !seen {
				e.at[p.Name] = time.Now()
			}
			e.mu.Unlock()
		}
	}()
	return e, nil
}

// near reports whether t lies within one second before to three seconds after a
// recorded exit: the time kube-proxy and the API server's pooled connections take to
// let go of a pod that stopped listening at once.
func (e *exits) near(t time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, at := range e.at {
		if !t.Before(at.Add(-time.Second)) && !t.After(at.Add(3*time.Second)) {
			return true
		}
	}
	return false
}

func (e *exits) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.at)
}

// connectionLevel: the API server could not talk to a controller at all (as opposed to a
// controller answering with an error, timing out, or admitting without a sidecar).
func connectionLevel(f admissionFailure) bool {
	for _, s := range []string{"connect: connection refused", "write: broken pipe", "connection reset by peer", ": EOF"} {
		if strings.Contains(f.msg, s) {
			return true
		}
	}
	return false
}

// controllerPodNames are the names of the live controller pods.
func (n node) controllerPodNames() map[string]bool {
	names := map[string]bool{}
	for _, p := range n.controllerPods() {
		names[p.Name] = true
	}
	return names
}

// waitRollout waits until the controller Deployment has rolled out image: two pods, both
// ready and running image, none of them in replaced, and no other controller pod left,
// not even terminating.
func (n node) waitRollout(image string, replaced map[string]bool) {
	n.t.Helper()
	poll.Eventually(n.t, 5*time.Minute, "the controller rolled out to "+image, func() (bool, string) {
		d, err := n.cs.AppsV1().Deployments("podtls-system").Get(n.ctx, "podtls-controller", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != 2 || d.Status.AvailableReplicas != 2 || d.Status.Replicas != 2 {
			return false, fmt.Sprintf("deployment status %+v", d.Status)
		}
		pods, err := n.cs.CoreV1().Pods("podtls-system").List(n.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err != nil {
			return false, err.Error()
		}
		var state []string
		done := len(pods.Items) == 2
		for _, p := range pods.Items {
			ready := podReady(&p)
			state = append(state, fmt.Sprintf("%s %s ready=%v deleting=%v", p.Name, p.Spec.Containers[0].Image, ready, p.DeletionTimestamp != nil))
			done = done && ready && p.DeletionTimestamp == nil && p.Spec.Containers[0].Image == image && !replaced[p.Name]
		}
		return done, strings.Join(state, "; ")
	})
	for _, p := range n.controllerPods() {
		for _, st := range p.Status.ContainerStatuses {
			if st.RestartCount != 0 {
				n.t.Errorf("new controller %s restarted %d times", p.Name, st.RestartCount)
			}
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// verifyServed reads the certificate pod's sidecar serves on its mTLS port and verifies
// it for preference's Service name against roots. It returns the leaf.
func (n node) verifyServed(pod *corev1.Pod, roots *x509.CertPool) *x509.Certificate {
	n.t.Helper()
	chain, err := servedChain(n.ctx, n.c, net.JoinHostPort(pod.Status.PodIP, preferenceTLS))
	if err != nil {
		n.t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, crt := range chain[1:] {
		inter.AddCert(crt)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: preferenceDNS,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		n.t.Errorf("certificate served by %s does not verify against the CA root: %v", pod.Name, err)
	}
	return chain[0]
}

// servedChain is the certificate chain a TLS server presents at addr (inside the node's
// network namespace). The client sends no certificate, so an mTLS server refuses the
// connection afterwards; the chain arrives before that.
func servedChain(ctx context.Context, c *cluster.Cluster, addr string) ([]*x509.Certificate, error) {
	raw, err := c.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer raw.Close()
	var chain []*x509.Certificate
	conn := tls.Client(raw, &tls.Config{
		InsecureSkipVerify: true, // the caller verifies the chain against the CA root
		ServerName:         preferenceDNS,
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

// firstSubject is the subject of the first certificate in pemData, for the log.
func firstSubject(pemData []byte) string {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return "<no PEM>"
	}
	crt, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return crt.Subject.String()
}

// dumpUpgrade writes what a failure needs into the test log: pods, events, and the logs of
// the controllers and of the workload.
func dumpUpgrade(t *testing.T, c *cluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"describe", "pods", "-n", "podtls-system"},
		{"describe", "pods", "-n", upgradeNS},
		{"logs", "-n", "podtls-system", "-l", "app.kubernetes.io/component=controller", "--tail=200", "--prefix"},
		{"logs", "-n", upgradeNS, "-l", "app=preference", "--all-containers", "--tail=200", "--prefix"},
	} {
		out, err := c.RunKubectl(ctx, args...)
		t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("component logs: %s", c.LogDir())
}
