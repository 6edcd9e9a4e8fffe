package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// Machine is a host outside Kubernetes on the cluster's LAN: a network namespace with
// its own address on a veth port of the LAN bridge, as a VM or a bare-metal server next
// to the nodes. No kubelet, no CNI: its processes run there directly. Pods reach it at
// IP; it reaches the nodes, their pod ranges and the Service range through the nodes.
type Machine struct {
	Name  string
	IP    string
	netns string
}

// AddMachine creates a machine named name with address ip (inside the LAN's prefix,
// not a node's). Down removes it with the cluster; its processes are killed then.
func (c *Cluster) AddMachine(ctx context.Context, name, ip string) (*Machine, error) {
	if parsed := net.ParseIP(ip); parsed == nil || parsed.To4() == nil {
		return nil, fmt.Errorf("machine %s: %q is not an IPv4 address", name, ip)
	}
	for _, n := range c.nodes {
		if n.IP == ip {
			return nil, fmt.Errorf("machine %s: %s is node %s's address", name, ip, n.Name)
		}
	}
	m := &Machine{Name: name, IP: ip, netns: netnsPrefix + c.ID + "-m-" + name}
	port := "m-" + name
	if len(port) > 15 {
		return nil, fmt.Errorf("machine name %q too long for an interface name", name)
	}
	steps := [][]string{
		{"netns", "add", m.netns},
		{"-n", m.netns, "link", "set", "lo", "up"},
		{"-n", m.netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", c.lan},
		{"-n", m.netns, "addr", "add", fmt.Sprintf("%s/%d", ip, nodePrefixLen), "dev", "eth0"},
		{"-n", m.netns, "link", "set", "eth0", "up"},
		{"-n", c.lan, "link", "set", port, "master", lanBridge},
		{"-n", c.lan, "link", "set", port, "up"},
		// Services through the first node (kube-proxy DNATs forwarded packets there).
		{"-n", m.netns, "route", "add", ServiceCIDR, "via", c.nodes[0].IP, "dev", "eth0"},
	}
	for _, n := range c.nodes {
		steps = append(steps, []string{"-n", m.netns, "route", "add", n.PodCIDR, "via", n.IP, "dev", "eth0"})
	}
	for _, args := range steps {
		if err := ipNetns(ctx, args...); err != nil {
			return nil, fmt.Errorf("machine %s: %w", name, err)
		}
	}
	c.logf("machine %s at %s (network namespace %s)", name, ip, m.netns)
	return m, nil
}

// Command runs a program on the machine (ip netns exec replaces itself with it, so
// signals reach the program).
func (m *Machine) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", m.netns, name}, args...)...)
}

// UseClusterDNS points the machine's resolver at the cluster's DNS Service (ip netns
// exec mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf), so its programs
// resolve NAME.NS.svc like a VM whose DNS forwards the cluster domain. The returned
// function removes the file.
func (m *Machine) UseClusterDNS() (func(), error) {
	dir := filepath.Join("/etc/netns", m.netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.Name, err)
	}
	conf := "nameserver " + DNSServiceIP + "\nsearch cluster.local\noptions ndots:5\n"
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.Name, err)
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}
