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

// netnsPath is the bind mount of the node's network namespace.
func (c *Cluster) netnsPath() string { return netnsDir + "/" + c.netns }

// createNetns makes the node's network namespace: loopback up and a veth pair with both
// ends inside it as the node's uplink carrying NodeIP, and a route for the Service CIDR
// over it. There is no default route: pods, Services and the control plane only ever talk
// to each other, nothing leaves the namespace.
func createNetns(ctx context.Context, name string) error {
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", uplink, "type", "veth", "peer", "name", uplinkPeer},
		{"-n", name, "addr", "add", fmt.Sprintf("%s/%d", NodeIP, nodePrefixLen), "dev", uplink},
		{"-n", name, "link", "set", uplink, "up"},
		{"-n", name, "link", "set", uplinkPeer, "up"},
		// Host processes (the API server calling a webhook) connect to ClusterIPs: the
		// kernel needs a route before kube-proxy's OUTPUT rules DNAT the packet to a pod.
		// The route ends at the veth, inside the namespace.
		{"-n", name, "route", "add", ServiceCIDR, "dev", uplink, "src", NodeIP},
	}
	for _, args := range steps {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, bytes.TrimSpace(out))
		}
	}
	// The bridge plugin enables forwarding itself; br_netfilter's per-namespace switch is
	// best effort (kube-proxy masquerades everything, so Services work without it).
	for _, sysctl := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		_ = exec.CommandContext(ctx, "nsenter", "--net="+netnsDir+"/"+name, "--", "sysctl", "-qw", sysctl).Run()
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
