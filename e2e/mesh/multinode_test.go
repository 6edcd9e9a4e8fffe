package mesh

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

// leaseName is the controller's leader-election Lease in the release namespace.
const leaseName = "podtls-controller"

// TestMultiNode runs podtls on a two-node cluster as a user installs it: the controller's
// two replicas land on different nodes, pods on different nodes talk mTLS, the
// PodDisruptionBudget keeps a replica admitting pods through node drains, and the
// reconcilers' leadership moves when the leader's node is lost. make e2e-multinode runs it.
func TestMultiNode(t *testing.T) {
	cluster.Require(t, "multi-node")
	tTest := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	images := buildImages(ctx, t, root)

	tUp := time.Now()
	c, err := cluster.Up(ctx, cluster.Options{Images: images, Logger: log, Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	upTime := time.Since(tUp) - c.LockWait
	t.Cleanup(func() { _ = c.Down() })
	dumped := false
	dumpOnFailure := func() {
		if t.Failed() && !dumped {
			dumped = true
			dump(t, c)
		}
	}
	t.Cleanup(dumpOnFailure)
	cs := c.Client
	nodes := c.Nodes()
	if len(nodes) != 2 {
		t.Fatalf("cluster has %d nodes, want 2", len(nodes))
	}

	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 2}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)

	t.Run("controller replicas run on different nodes", func(t *testing.T) {
		pods := controllerPods(ctx, t, cs)
		if len(pods) != 2 || pods[0].Spec.NodeName == pods[1].Spec.NodeName {
			t.Fatalf("controller pods on %v, want one on each node (preferred pod anti-affinity by hostname)", podNodes(pods))
		}
	})

	for _, args := range [][]string{{"create", "namespace", ns}, {"label", "namespace", ns, "podtls.io/inject=enabled"}} {
		if _, err := c.RunKubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	manifest, err := filepath.Abs(filepath.Join("testdata", "preference.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunKubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	var pref corev1.Pod
	waitFor(ctx, t, 2*time.Minute, "preference pod ready", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=preference"})
		if err != nil || len(pods.Items) != 1 || !podReady(&pods.Items[0]) {
			return false
		}
		pref = pods.Items[0]
		return true
	})

	t.Run("mTLS between pods on different nodes", func(t *testing.T) {
		other := otherNode(nodes, pref.Spec.NodeName)
		pod := callerPod("customer-across", "customer", whoamiImage, "60s")
		pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": other.Name}
		got := runPod(ctx, t, cs, pod, 0)
		body := strings.TrimSpace(logsOf(ctx, cs, got.Name, "app"))
		if want := pref.Name + " client-id=" + customerID; got.Status.Phase != corev1.PodSucceeded || body != want {
			t.Fatalf("caller on %s is %s and got %q, want Succeeded and %q", got.Spec.NodeName, got.Status.Phase, body, want)
		}
		// The two pods sit on different nodes, with addresses of their nodes' pod ranges:
		// the call crossed the LAN between the nodes' namespaces.
		for _, p := range []struct {
			pod  *corev1.Pod
			node cluster.Node
		}{{got, other}, {&pref, nodeNamed(nodes, pref.Spec.NodeName)}} {
			_, cidr, err := net.ParseCIDR(p.node.PodCIDR)
			if err != nil {
				t.Fatal(err)
			}
			if p.pod.Spec.NodeName != p.node.Name || !cidr.Contains(net.ParseIP(p.pod.Status.PodIP)) {
				t.Errorf("pod %s on %s with IP %s, want node %s and an IP in %s",
					p.pod.Name, p.pod.Spec.NodeName, p.pod.Status.PodIP, p.node.Name, p.node.PodCIDR)
			}
		}
	})

	var drains string
	t.Run("PodDisruptionBudget keeps a replica through node drains", func(t *testing.T) {
		drains = checkDrains(ctx, t, c)
	})

	var failover time.Duration
	t.Run("leadership moves when the leader's node is lost", func(t *testing.T) {
		failover = checkLeaderFailover(ctx, t, c)
	})

	dumpOnFailure()
	tDown := time.Now()
	if err := c.Down(); err != nil {
		t.Errorf("Down: %v", err)
	}
	downTime := time.Since(tDown)
	if left := cluster.Leftovers(cluster.DefaultBaseDir); len(left) > 0 {
		t.Errorf("left behind after Down: %s", strings.Join(left, "; "))
	}
	t.Logf("TIMINGS two-node bring-up %s (after %s waiting for another run); %s; leader failover after node loss %s; tear-down %s; whole test %s; load average %s",
		upTime.Round(time.Millisecond), c.LockWait.Round(time.Millisecond), drains, failover.Round(time.Millisecond), downTime.Round(time.Millisecond),
		time.Since(tTest).Round(time.Millisecond), loadAverage())
}

// checkDrains drains the node of one controller replica (allowed: its replacement starts on
// the other node), then, with that node still cordoned, the other node: one replica may go,
// the last one is held by the PodDisruptionBudget, so that drain cannot finish. Admission
// is probed and ready replicas counted throughout. It returns the timings.
func checkDrains(ctx context.Context, t *testing.T, c *cluster.Cluster) string {
	cs := c.Client
	pods := controllerPods(ctx, t, cs)
	if len(pods) != 2 || pods[0].Spec.NodeName == pods[1].Spec.NodeName {
		t.Fatalf("controller pods on %v, want one on each node", podNodes(pods))
	}
	first, second := pods[0].Spec.NodeName, pods[1].Spec.NodeName
	defer func() {
		for _, n := range []string{first, second} {
			if _, err := c.RunKubectl(context.WithoutCancel(ctx), "uncordon", n); err != nil {
				t.Errorf("uncordon %s: %v", n, err)
			}
		}
	}()
	probe := startAdmissionProbe(ctx, cs)
	minReady := watchReadyControllers(ctx, cs)

	t0 := time.Now()
	if out, err := c.RunKubectl(ctx, "drain", first, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"); err != nil {
		t.Fatalf("drain %s (one controller replica may go): %v\n%s", first, err, out)
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)
	firstDrain := time.Since(t0)
	if got := podNodes(controllerPods(ctx, t, cs)); got[first] != 0 || got[second] != 2 {
		t.Errorf("after draining %s the controller pods are on %v, want both on %s", first, got, second)
	}

	t1 := time.Now()
	out, err := c.RunKubectl(ctx, "drain", second, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s")
	if err == nil {
		t.Errorf("drain of %s, the last schedulable node, finished: the PodDisruptionBudget did not hold the last replica\n%s", second, out)
	} else if !strings.Contains(err.Error(), "disruption budget") {
		t.Errorf("drain of %s failed for another reason than the PodDisruptionBudget: %v", second, err)
	}
	var ready, pending int
	for _, p := range controllerPods(ctx, t, cs) {
		switch {
		case podReady(&p):
			ready++
		case p.Status.Phase == corev1.PodPending && p.Spec.NodeName == "":
			pending++
		}
	}
	if ready != 1 || pending != 1 {
		t.Errorf("with both nodes cordoned: %d controller replicas ready and %d unschedulable, want 1 and 1", ready, pending)
	}
	secondDrain := time.Since(t1)

	for _, n := range []string{first, second} {
		if _, err := c.RunKubectl(ctx, "uncordon", n); err != nil {
			t.Fatal(err)
		}
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)
	probes, refusals := probe.stop()
	low := minReady()
	t.Logf("%d dry-run creations through both drains, %d refused or not injected; fewest ready controller replicas %d",
		probes, len(refusals), low)
	if low < 1 {
		t.Error("no controller replica was ready at some point of the drains")
	}
	if len(refusals) > 0 {
		t.Errorf("pods refused during the drains:\n%s", strings.Join(refusals, "\n"))
	}
	return "drain of a replica's node " + firstDrain.Round(time.Millisecond).String() +
		", drain held by the PodDisruptionBudget " + secondDrain.Round(time.Millisecond).String()
}

// checkLeaderFailover stops the node of the replica holding the leader Lease and waits for
// the replica on the other node to take it, then shows a leader-only reconciler at work:
// a newly labelled namespace gets its trust bundle. It returns the time from the node's
// loss to the new leader.
func checkLeaderFailover(ctx context.Context, t *testing.T, c *cluster.Cluster) time.Duration {
	cs := c.Client
	pods := controllerPods(ctx, t, cs)
	if len(pods) != 2 || pods[0].Spec.NodeName == pods[1].Spec.NodeName {
		t.Fatalf("controller pods on %v, want one on each node", podNodes(pods))
	}
	var leader string
	waitFor(ctx, t, time.Minute, "a leader", func() bool {
		leader = leaseHolder(ctx, cs)
		return leader != ""
	})
	var lost, survivor corev1.Pod
	switch leader {
	case pods[0].Name:
		lost, survivor = pods[0], pods[1]
	case pods[1].Name:
		lost, survivor = pods[1], pods[0]
	default:
		t.Fatalf("lease held by %q, not by a live controller pod (%s, %s)", leader, pods[0].Name, pods[1].Name)
	}

	t0 := time.Now()
	if err := c.StopNode(ctx, lost.Spec.NodeName); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 2*time.Minute, "the lease to move to "+survivor.Name, func() bool {
		return leaseHolder(ctx, cs) == survivor.Name
	})
	failover := time.Since(t0)
	t.Logf("node %s (leader %s) lost; %s leads after %s", lost.Spec.NodeName, lost.Name, survivor.Name, failover.Round(time.Millisecond))

	const late = "late"
	if _, err := c.RunKubectl(ctx, "create", "namespace", late); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunKubectl(ctx, "label", "namespace", late, "podtls.io/inject=enabled"); err != nil {
		t.Fatal(err)
	}
	want, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "podtls-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, time.Minute, "the new leader to write the trust bundle into namespace "+late, func() bool {
		cm, err := cs.CoreV1().ConfigMaps(late).Get(ctx, "podtls-trust-bundle", metav1.GetOptions{})
		return err == nil && cm.Data["ca.crt"] == want.Data["ca.crt"]
	})
	return failover
}

// leaseHolder is the pod holding the controller's Lease (controller-runtime's identity is
// <pod name>_<uuid>), or "".
func leaseHolder(ctx context.Context, cs kubernetes.Interface) string {
	l, err := cs.CoordinationV1().Leases(systemNS).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	pod, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return pod
}

// waitAvailable waits until the controller Deployment has all its replicas available.
func waitAvailable(ctx context.Context, t *testing.T, cs kubernetes.Interface, timeout time.Duration) {
	t.Helper()
	waitFor(ctx, t, timeout, "podtls-controller available", func() bool {
		d, err := cs.AppsV1().Deployments(systemNS).Get(ctx, controllerName, metav1.GetOptions{})
		return err == nil && d.Spec.Replicas != nil && d.Status.AvailableReplicas == *d.Spec.Replicas &&
			d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.Replicas == *d.Spec.Replicas
	})
}

// watchReadyControllers counts the ready, not terminating controller pods every 100 ms
// until the returned function is called, which returns the fewest seen.
func watchReadyControllers(ctx context.Context, cs kubernetes.Interface) func() int {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	low := -1
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			pods, err := cs.CoreV1().Pods(systemNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
			if err == nil {
				n := 0
				for _, p := range pods.Items {
					if p.DeletionTimestamp == nil && podReady(&p) {
						n++
					}
				}
				if low < 0 || n < low {
					low = n
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() int {
		close(stop)
		wg.Wait()
		return low
	}
}

// podNodes counts pods per node.
func podNodes(pods []corev1.Pod) map[string]int {
	out := map[string]int{}
	for _, p := range pods {
		out[p.Spec.NodeName]++
	}
	return out
}

func nodeNamed(nodes []cluster.Node, name string) cluster.Node {
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	return cluster.Node{Name: name}
}

func otherNode(nodes []cluster.Node, name string) cluster.Node {
	for _, n := range nodes {
		if n.Name != name {
			return n
		}
	}
	return cluster.Node{}
}
