package cluster

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// Fixed addressing of the cluster. Every node lives in its own network namespace, so these
// never collide with the machine's networks and nothing routes off the machine.
const (
	// NodeName is the name the first node's kubelet registers; that node's namespace
	// also runs the control plane. Further nodes are NodeName-1, NodeName-2, ...
	NodeName = "podtls-e2e"
	// NodeIP is the first node's InternalIP, where the API server and CoreDNS listen.
	// Node i has 10.250.0.(2+i).
	NodeIP = "10.250.0.2"
	// ServiceCIDR is the Service IP range; the API server's Service is its first address.
	ServiceCIDR = "10.96.0.0/16"
	// APIServiceIP is the ClusterIP of default/kubernetes.
	APIServiceIP = "10.96.0.1"
	// DNSServiceIP is the ClusterIP of kube-system/kube-dns, served by CoreDNS.
	DNSServiceIP = "10.96.0.10"
	// PodCIDR is the first node's pod range (bridge + host-local IPAM); node i has
	// 10.244.i.0/24.
	PodCIDR = "10.244.0.0/24"
	// ClusterCIDR holds every node's pod range.
	ClusterCIDR = "10.244.0.0/16"
	// ClusterDomain is the DNS suffix of Services and pods.
	ClusterDomain = "cluster.local"
	// PauseImage is the sandbox image containerd starts for every pod; Up builds and imports it.
	PauseImage = "localhost/podtls/pause:3.10"
	// MaxNodes bounds Options.Nodes: the addressing plan has room for more, a 2-core
	// machine does not.
	MaxNodes = 8

	apiserverPort = 6443
	nodePrefixLen = 24
	uplink        = "podtls0"
	lanBridge     = "podtlsbr"
	cniNetwork    = "podtls-e2e"
	cgroupRoot    = "/podtls-e2e"
	corednsReady  = 8181
	corednsHealth = 8180
	kubeletHealth = 10248
	proxyHealth   = 10256
	proxyMetrics  = 10249
)

// paths are the private directories of one cluster run; nothing is written elsewhere.
type paths struct {
	run          string // the run's root directory
	logs         string
	pki          string
	etcd         string
	apiserver    string
	coredns      string
	pidFile      string
	controlFiles string // Corefile, resolv.conf
}

func newPaths(run, logs string) paths {
	return paths{
		run:          run,
		logs:         logs,
		pki:          filepath.Join(run, "pki"),
		etcd:         filepath.Join(run, "etcd"),
		apiserver:    filepath.Join(run, "apiserver"),
		coredns:      filepath.Join(run, "coredns"),
		pidFile:      filepath.Join(run, "pids"),
		controlFiles: filepath.Join(run, "config"),
	}
}

// nodePaths are the private directories of one node of a run, under <run>/nodes/<name>.
type nodePaths struct {
	dir        string
	containerd string // config, root and state
	socket     string // containerd's gRPC socket
	cniConf    string
	cniData    string
	kubelet    string // kubelet --root-dir
	podLogs    string
	config     string // kubelet and kube-proxy configs
}

func newNodePaths(run, name string) nodePaths {
	dir := filepath.Join(run, "nodes", name)
	return nodePaths{
		dir:        dir,
		containerd: filepath.Join(dir, "containerd"),
		socket:     filepath.Join(dir, "containerd", "containerd.sock"),
		cniConf:    filepath.Join(dir, "cni", "net.d"),
		cniData:    filepath.Join(dir, "cni", "data"),
		kubelet:    filepath.Join(dir, "kubelet"),
		podLogs:    filepath.Join(dir, "pod-logs"),
		config:     filepath.Join(dir, "config"),
	}
}

func (p nodePaths) all() []string {
	return []string{p.containerd, p.cniConf, p.cniData, p.kubelet, p.podLogs, p.config}
}

// containerdConfig renders containerd's config (version 2, containerd 1.6/1.7). Every path is
// private to the run, including runc's state root and the pods' network namespace mounts,
// so a run never touches (or is confused by) a system containerd.
func containerdConfig(p nodePaths, cniBinDir string) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	var b strings.Builder
	fmt.Fprintf(&b, "version = 2\n")
	fmt.Fprintf(&b, "root = %s\nstate = %s\n", q(filepath.Join(p.containerd, "root")), q(filepath.Join(p.containerd, "state")))
	// The opt plugin would install into /opt/containerd; the other snapshotters are unused.
	b.WriteString(`disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]` + "\n")
	fmt.Fprintf(&b, "\n[grpc]\n  address = %s\n", q(p.socket))
	fmt.Fprintf(&b, "\n[ttrpc]\n  address = %s\n", q(p.socket+".ttrpc"))
	fmt.Fprintf(&b, "\n[metrics]\n  address = \"\"\n")
	b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\"]\n")
	fmt.Fprintf(&b, "  sandbox_image = %s\n", q(PauseImage))
	// These machines deny CAP_SYS_RESOURCE: without this runc fails to lower oom_score_adj.
	b.WriteString("  restrict_oom_score_adj = true\n")
	b.WriteString("  netns_mounts_under_state_dir = true\n")
	b.WriteString("  enable_unprivileged_ports = true\n")
	b.WriteString("  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n")
	b.WriteString("    snapshotter = \"overlayfs\"\n    default_runtime_name = \"runc\"\n")
	b.WriteString("    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n")
	b.WriteString("      runtime_type = \"io.containerd.runc.v2\"\n")
	b.WriteString("      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n")
	b.WriteString("        SystemdCgroup = false\n")
	fmt.Fprintf(&b, "        Root = %s\n", q(filepath.Join(p.containerd, "state", "runc")))
	b.WriteString("  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n")
	fmt.Fprintf(&b, "    bin_dir = %s\n    conf_dir = %s\n", q(cniBinDir), q(p.cniConf))
	return b.String()
}

// cniConfList is the pod network: a bridge with host-local IPAM (state kept in the run dir)
// and portmap for hostPort; containerd adds the loopback plugin by itself. hairpinMode lets a
// pod reach itself through a Service.
func cniConfList(p nodePaths, podCIDR string) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       cniNetwork,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": p.cniData,
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode CNI config: %w", err)
	}
	return data, nil
}

// kubeletConfig renders the KubeletConfiguration. JSON is valid YAML, and json.Marshal
// keeps the field names exact.
func kubeletConfig(n *Node, pki pkiFiles, resolvConf string) ([]byte, error) {
	p := n.paths
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		"authentication": map[string]any{
			"anonymous": map[string]bool{"enabled": false},
			// Webhook authn/authz: the API server's kubelet client cert for logs/exec, and
			// bearer tokens checked by TokenReview.
			"webhook": map[string]any{"enabled": true, "cacheTTL": "10s"},
			"x509":    map[string]string{"clientCAFile": pki.caCert},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               n.cgroupRoot(),
		"containerRuntimeEndpoint": "unix://" + p.socket,
		"failSwapOn":               false,
		// These build hosts run cgroup v1 (hybrid); kubelet >= 1.35 refuses to start there
		// unless told otherwise (the field exists since 1.31; cgroup v2 hosts ignore it).
		"failCgroupV1": false,
		// Secret and ConfigMap volumes are refreshed every sync: ~1-2 s instead of ~1 min.
		"syncFrequency":               "2s",
		"fileCheckFrequency":          "5s",
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		// Never evict on a busy build machine's disk.
		"evictionHard": map[string]string{
			"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%",
		},
		"clusterDNS":            []string{DNSServiceIP},
		"clusterDomain":         ClusterDomain,
		"resolvConf":            resolvConf,
		"podLogsDir":            p.podLogs,
		"readOnlyPort":          0,
		"healthzBindAddress":    "127.0.0.1",
		"healthzPort":           kubeletHealth,
		"address":               n.IP,
		"serializeImagePulls":   false,
		"protectKernelDefaults": false,
		"rotateCertificates":    false,
		"serverTLSBootstrap":    false,
		"maxPods":               110,
		"shutdownGracePeriod":   "0s",
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode kubelet config: %w", err)
	}
	return data, nil
}

// kubeProxyConfig renders the KubeProxyConfiguration: iptables mode in the node's namespace.
// masqueradeAll makes pod -> Service -> pod on the same bridge work without relying on
// br_netfilter; conntrack zeros leave the (host-wide) conntrack sysctls alone.
func kubeProxyConfig(n *Node, kubeconfig string) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion":       "kubeproxy.config.k8s.io/v1alpha1",
		"kind":             "KubeProxyConfiguration",
		"mode":             "iptables",
		"clientConnection": map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride": n.Name,
		"bindAddress":      n.IP,
		"clusterCIDR":      ClusterCIDR,
		// On the node's address, so Up checks every node's kube-proxy from the first one.
		"healthzBindAddress": fmt.Sprintf("%s:%d", n.IP, proxyHealth),
		"metricsBindAddress": fmt.Sprintf("127.0.0.1:%d", proxyMetrics),
		"iptables": map[string]any{
			"masqueradeAll":      true,
			"localhostNodePorts": false,
			"syncPeriod":         "10s",
			"minSyncPeriod":      "0s",
		},
		"conntrack": map[string]any{
			"maxPerCore":            0,
			"min":                   0,
			"tcpEstablishedTimeout": "0s",
			"tcpCloseWaitTimeout":   "0s",
		},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode kube-proxy config: %w", err)
	}
	return data, nil
}

// corefile serves the cluster zone (and reverse zones) from the API server. There is no
// forward plugin on purpose: names outside the cluster are not resolved, so no query
// leaves the machine.
func corefile(kubeconfig string) string {
	return fmt.Sprintf(`.:53 {
    bind %[1]s
    errors
    health %[1]s:%[3]d
    ready %[1]s:%[4]d
    kubernetes %[5]s in-addr.arpa ip6.arpa {
        kubeconfig %[2]s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
`, NodeIP, kubeconfig, corednsHealth, corednsReady, ClusterDomain)
}
