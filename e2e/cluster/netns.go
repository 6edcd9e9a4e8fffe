package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// netnsPath is the bind mount of the first node's network namespace, where the control
// plane runs.
func (c *Cluster) netnsPath() string { return netnsDir + "/" + c.netns }

// ipNetns runs ip(8) with args.
func ipNetns(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %v: %w: %s", args, err, bytes.TrimSpace(out))
	}
	return nil
}

// createLAN makes the namespace holding the cluster's LAN: a bridge every node's uplink
// is a port of. It runs nothing and has no address; nodes talk across it at layer 2.
func createLAN(ctx context.Context, name string) error {
	for _, args := range [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", lanBridge, "type", "bridge"},
		{"-n", name, "link", "set", lanBridge, "up"},
	} {
		if err := ipNetns(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// createNodeNetns makes a node's network namespace: loopback up and a veth pair whose
// inner end is the node's uplink carrying its IP, and whose outer end is a port of the
// LAN bridge; a route for the Service CIDR over the uplink. There is no default route:
// pods, Services and the control plane only ever talk to each other, nothing leaves the
// cluster's namespaces.
func createNodeNetns(ctx context.Context, n *Node, lan string) error {
	port := fmt.Sprintf("n%d", n.index)
	for _, args := range [][]string{
		{"netns", "add", n.netns},
		{"-n", n.netns, "link", "set", "lo", "up"},
		{"-n", n.netns, "link", "add", uplink, "type", "veth", "peer", "name", port, "netns", lan},
		{"-n", n.netns, "addr", "add", fmt.Sprintf("%s/%d", n.IP, nodePrefixLen), "dev", uplink},
		{"-n", n.netns, "link", "set", uplink, "up"},
		{"-n", lan, "link", "set", port, "master", lanBridge},
		{"-n", lan, "link", "set", port, "up"},
		// Host processes (the API server calling a webhook) connect to ClusterIPs: the
		// kernel needs a route before kube-proxy's OUTPUT rules DNAT the packet to a pod.
		{"-n", n.netns, "route", "add", ServiceCIDR, "dev", uplink, "src", n.IP},
	} {
		if err := ipNetns(ctx, args...); err != nil {
			return err
		}
	}
	// The bridge plugin enables forwarding itself; br_netfilter's per-namespace switch is
	// best effort (kube-proxy masquerades everything, so Services work without it).
	for _, sysctl := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		_ = exec.CommandContext(ctx, "nsenter", "--net="+n.netnsPath(), "--", "sysctl", "-qw", sysctl).Run()
	}
	return nil
}

// routePods gives n a route to every other node's pod range through that node's IP, as a
// cloud's route table or a flat-network CNI would: pods reach each other across nodes
// with their own addresses, no overlay and no NAT.
func routePods(ctx context.Context, n *Node, nodes []*Node) error {
	for _, other := range nodes {
		if other == n {
			continue
		}
		if err := ipNetns(ctx, "-n", n.netns, "route", "add", other.PodCIDR, "via", other.IP, "dev", uplink); err != nil {
			return err
		}
	}
	return nil
}

// DialContext opens a connection from inside the node's network namespace: the socket is
// created on an OS thread switched into the namespace, and keeps that namespace after the
// thread switches back. The test process itself stays in the machine's namespace.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := dialInNetns(ctx, c.netnsPath(), network, addr)
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func dialInNetns(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open current netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	var d net.Dialer
	conn, dialErr := d.DialContext(ctx, network, addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the node's namespace: keep it locked so the runtime
		// discards it when this goroutine ends, instead of reusing it.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("leave netns %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	if dialErr != nil {
		return nil, fmt.Errorf("dial %s in node namespace: %w", addr, dialErr)
	}
	return conn, nil
}
