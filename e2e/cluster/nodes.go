package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// Node is one node of the cluster: a kubelet, containerd and kube-proxy in a network
// namespace of their own, with an uplink into the cluster's LAN (a bridge in a namespace
// of its own) and routes to every other node's pod range. The first node's namespace also
// runs the control plane and CoreDNS.
type Node struct {
	// Name is the name the kubelet registers (the Node object's name and its
	// kubernetes.io/hostname label).
	Name string
	// IP is the node's InternalIP on the LAN.
	IP string
	// PodCIDR is the node's pod range.
	PodCIDR string

	index int
	netns string
	paths nodePaths
}

// newNode describes node i of run id.
func newNode(i int, run, id string) *Node {
	n := &Node{
		Name:    NodeName,
		IP:      fmt.Sprintf("10.250.0.%d", 2+i),
		PodCIDR: fmt.Sprintf("10.244.%d.0/24", i),
		index:   i,
		netns:   netnsPrefix + id,
	}
	if i > 0 {
		n.Name = fmt.Sprintf("%s-%d", NodeName, i)
		n.netns = fmt.Sprintf("%s%s-n%d", netnsPrefix, id, i)
	}
	n.paths = newNodePaths(run, n.Name)
	return n
}

// cgroupRoot is the node's kubelet cgroupRoot, below the one every node shares.
func (n *Node) cgroupRoot() string { return cgroupRoot + "/" + n.Name }

// proc names a component of this node: the first node's keep their plain names (and log
// files), the others get the node's index as suffix (kubelet-1.log).
func (n *Node) proc(component string) string {
	if n.index == 0 {
		return component
	}
	return component + "-" + strconv.Itoa(n.index)
}

func (n *Node) netnsPath() string { return netnsDir + "/" + n.netns }

// Nodes lists the cluster's nodes, the control plane's first.
func (c *Cluster) Nodes() []Node {
	out := make([]Node, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = *n
	}
	return out
}

func (c *Cluster) node(name string) (*Node, error) {
	for _, n := range c.nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no node %q in cluster %s", name, c.ID)
}

// startNodeRuntime starts containerd of n and waits until it answers.
func (c *Cluster) startNodeRuntime(ctx context.Context, n *Node) error {
	containerd, err := c.startIn(n.netnsPath(), n.proc("containerd"), "containerd", "--config", filepath.Join(n.paths.containerd, "config.toml"))
	if err != nil {
		return err
	}
	return poll(ctx, componentTimeout, func() (bool, error) {
		if done, err := containerd.exited(); done {
			return false, fmt.Errorf("%s: %w", containerd.name, err)
		}
		_, err := c.Exec(ctx, "ctr", "--address", n.paths.socket, "version")
		return err == nil, nil
	})
}

// startKubelet starts the kubelet and kube-proxy of n.
func (c *Cluster) startKubelet(n *Node) error {
	if err := createCgroupRoot(n.cgroupRoot()); err != nil {
		return err
	}
	if _, err := c.startIn(n.netnsPath(), n.proc("kubelet"), c.bin("kubelet"),
		"--config="+filepath.Join(n.paths.config, "kubelet.yaml"),
		"--kubeconfig="+kubeconfigPath(c.pki.dir, kubeletIdentity(n.Name)),
		"--root-dir="+n.paths.kubelet,
		"--cert-dir="+filepath.Join(n.paths.kubelet, "pki"),
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP,
		"--v=1"); err != nil {
		return err
	}
	_, err := c.startIn(n.netnsPath(), n.proc("kube-proxy"), c.bin("kube-proxy"),
		"--config="+filepath.Join(n.paths.config, "kube-proxy.yaml"),
		"--v=1")
	return err
}

// StopNode takes a node off the cluster the way a power cut would: its kubelet,
// kube-proxy and containerd are killed, every container and shim of the node with them,
// and its uplink goes down, so the node neither answers nor reports. The API server and
// the other nodes keep running; the node's Node object turns NotReady once the
// controller-manager's grace period has passed. The control plane runs beside the first
// node's kubelet but is not part of it: stopping the first node leaves it running, and
// leaves that node's uplink up, since the control plane uses it too (the dead node's pod
// addresses then refuse connections instead of dropping packets). Down cleans up what a
// stopped node leaves.
func (c *Cluster) StopNode(ctx context.Context, name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, comp := range []string{"kubelet", "kube-proxy", "containerd"} {
		if p := c.byName[n.proc(comp)]; p != nil {
			p.kill()
		}
	}
	var errs []error
	if err := killAll(func() []int { return procsMatching(n.paths.dir, nil, cgroupDirsUnder(n.cgroupRoot())) }); err != nil {
		errs = append(errs, fmt.Errorf("kill the containers of node %s: %w", name, err))
	}
	if n.index > 0 {
		if err := ipNetns(ctx, "-n", n.netns, "link", "set", uplink, "down"); err != nil {
			errs = append(errs, err)
		}
	}
	c.logf("node %s stopped after %s", name, time.Since(t0).Round(time.Millisecond))
	return errors.Join(errs...)
}
