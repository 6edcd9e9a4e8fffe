package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Down tears the cluster down in order — controllers (so nothing recreates pods), pods,
// kubelets, containerds and their shims, kube-proxies and CoreDNS, API server, etcd — then
// removes mounts, cgroups, the network namespaces and the run directory, and releases the
// machine lock. The component
// logs stay in LogDir. Safe to call more than once.
func (c *Cluster) Down() error {
	c.down.Do(func() { c.downErr = c.teardown() })
	return c.downErr
}

func (c *Cluster) teardown() error {
	t0 := time.Now()
	var errs []error
	if c.paths.run == "" { // Up failed before creating anything
		c.unlock()
		return nil
	}
	// Controllers first, or the ReplicaSets and DaemonSets recreate the pods being deleted.
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		if p := c.byName[name]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	if p := c.byName["kubelet"]; p != nil && c.Client != nil {
		if done, _ := p.exited(); !done {
			c.deletePods()
		}
	}
	// Every process stops on SIGTERM; containerd leaves its shims running (they are
	// killed with the containers by cleanRun).
	order := append([]string{}, c.extra...)
	for _, comp := range []string{"kubelet", "containerd", "kube-proxy"} {
		for _, n := range c.nodes {
			order = append(order, n.proc(comp))
		}
	}
	order = append(order, "coredns", "kube-apiserver", "etcd")
	for _, name := range order {
		if p := c.byName[name]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	if err := cleanRun(c.paths.run, c.ID, c.logf); err != nil {
		errs = append(errs, err)
	}
	c.unlock()
	c.logf("cluster %s down after %s", c.ID, time.Since(t0).Round(time.Millisecond))
	if len(errs) > 0 {
		return fmt.Errorf("tear down cluster %s (logs in %s): %w", c.ID, c.paths.logs, errors.Join(errs...))
	}
	return nil
}

func (c *Cluster) unlock() {
	if c.lock != nil {
		c.lock.Close() // closing the descriptor releases the flock
		c.lock = nil
	}
}

// deletePods deletes every pod at once (grace period 0) and waits up to 20 s for the
// kubelet to stop their containers, so containers end through the normal CRI path.
func (c *Cluster) deletePods() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pods, err := c.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		c.logf("list pods for tear-down: %v", err)
		return
	}
	for _, pod := range pods.Items {
		err := c.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name,
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		if err != nil {
			c.logf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
	}
	_ = poll(ctx, 20*time.Second, func() (bool, error) {
		return countContainerProcs() == 0, nil
	})
}

// countContainerProcs counts processes in the node's pod cgroups.
func countContainerProcs() int {
	n := 0
	for _, cg := range cgroupDirs() {
		data, err := os.ReadFile(cg + "/cgroup.procs")
		if err == nil {
			for _, b := range data {
				if b == '\n' {
					n++
				}
			}
		}
	}
	return n
}
