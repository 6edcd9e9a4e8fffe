package cluster

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/gobuild"
	"k8s.io/client-go/tools/clientcmd"
)

func TestWritePKI(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	nodes := []string{NodeName, NodeName + "-1"}
	f, err := writePKI(dir, "https://10.250.0.2:6443", nodes,
		[]net.IP{net.ParseIP(APIServiceIP), net.ParseIP(NodeIP)}, now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(mustRead(t, f.caCert)) {
		t.Fatal("CA file holds no certificate")
	}
	serving := parseCert(t, mustRead(t, f.apiserverCert))
	for _, host := range []string{APIServiceIP, NodeIP, "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("serving cert not valid for %s: %v", host, err)
		}
	}
	if _, err := serving.Verify(x509.VerifyOptions{DNSName: "10.0.0.1", Roots: roots, CurrentTime: now}); err == nil {
		t.Error("serving cert valid for an address it must not cover")
	}
	for _, key := range []string{f.apiserver, f.saKey, f.kubeletClientKey} {
		if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v err %v, want 0600", key, st.Mode().Perm(), err)
		}
	}

	ids := clusterIdentities(nodes)
	for _, name := range nodes {
		if !slices.ContainsFunc(ids, func(id identity) bool { return id.user == "system:node:"+name }) {
			t.Errorf("no kubelet identity for node %s", name)
		}
	}
	for _, id := range ids {
		t.Run(id.file, func(t *testing.T) {
			cfg, err := clientcmd.LoadFromFile(kubeconfigPath(dir, id.file))
			if err != nil {
				t.Fatal(err)
			}
			auth := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo]
			cert := parseCert(t, auth.ClientCertificateData)
			if cert.Subject.CommonName != id.user || !reflect.DeepEqual(nilIfEmpty(cert.Subject.Organization), id.groups) {
				t.Errorf("subject %v, want CN=%s O=%v", cert.Subject, id.user, id.groups)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("client cert does not verify as client: %v", err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Error("client cert also verifies as a server cert")
			}
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Every path a component writes to must sit in the run directory.
func TestConfigsStayPrivate(t *testing.T) {
	n := newNode(1, "/base/run-x", "x")
	toml := containerdConfig(n.paths, "/usr/lib/cni")
	for _, want := range []string{
		`root = "/base/run-x/nodes/podtls-e2e-1/containerd/root"`,
		`state = "/base/run-x/nodes/podtls-e2e-1/containerd/state"`,
		`address = "/base/run-x/nodes/podtls-e2e-1/containerd/containerd.sock"`,
		`Root = "/base/run-x/nodes/podtls-e2e-1/containerd/state/runc"`,
		`conf_dir = "/base/run-x/nodes/podtls-e2e-1/cni/net.d"`,
		"restrict_oom_score_adj = true",
		"netns_mounts_under_state_dir = true",
		"SystemdCgroup = false",
		`sandbox_image = "` + PauseImage + `"`,
	} {
		if !strings.Contains(toml, want) {
			t.Errorf("containerd config lacks %q", want)
		}
	}

	var kubelet map[string]any
	data, err := kubeletConfig(n, pkiFiles{caCert: "/base/run-x/pki/ca.crt"}, "/base/run-x/config/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &kubelet); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"cgroupDriver": "cgroupfs", "failSwapOn": false, "failCgroupV1": false, "syncFrequency": "2s",
		"imageGCHighThresholdPercent": float64(100), "podLogsDir": "/base/run-x/nodes/podtls-e2e-1/pod-logs",
		"containerRuntimeEndpoint": "unix:///base/run-x/nodes/podtls-e2e-1/containerd/containerd.sock",
		"cgroupRoot":               "/podtls-e2e/podtls-e2e-1", "address": "10.250.0.3",
	} {
		if got := kubelet[key]; !reflect.DeepEqual(got, want) {
			t.Errorf("kubelet %s = %v, want %v", key, got, want)
		}
	}

	var proxy map[string]any
	if data, err = kubeProxyConfig(n, "/k"); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &proxy); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"hostnameOverride": "podtls-e2e-1", "bindAddress": "10.250.0.3", "clusterCIDR": ClusterCIDR,
	} {
		if got := proxy[key]; got != want {
			t.Errorf("kube-proxy %s = %v, want %v", key, got, want)
		}
	}

	var cni struct {
		Plugins []struct {
			Type string
			IPAM struct {
				DataDir string
				Ranges  [][]struct{ Subnet string }
			}
		}
	}
	data, err = cniConfList(n.paths, n.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cni); err != nil {
		t.Fatal(err)
	}
	if len(cni.Plugins) == 0 || cni.Plugins[0].Type != "bridge" || cni.Plugins[0].IPAM.DataDir != "/base/run-x/nodes/podtls-e2e-1/cni/data" ||
		len(cni.Plugins[0].IPAM.Ranges) != 1 || cni.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.244.1.0/24" {
		t.Errorf("CNI config %s: want a bridge on the node's pod range with IPAM state in the run dir", data)
	}

	core := corefile("/k")
	if strings.Contains(core, "forward") {
		t.Error("Corefile forwards queries off the machine")
	}
	if !strings.Contains(core, "bind "+NodeIP) || !strings.Contains(core, "kubeconfig /k") {
		t.Errorf("Corefile:\n%s", core)
	}
}

// Nodes get distinct names, addresses, pod ranges, namespaces and directories, and the
// first node keeps the names single-node users (and logs) know.
func TestNodeAddressing(t *testing.T) {
	seen := map[string]bool{}
	for i := range MaxNodes {
		n := newNode(i, "/base/run-x", "abcd")
		for _, v := range []string{n.Name, n.IP, n.PodCIDR, n.netns, n.paths.dir, n.cgroupRoot(), n.proc("kubelet")} {
			if seen[v] {
				t.Errorf("node %d reuses %q", i, v)
			}
			seen[v] = true
		}
		if got := runOfNetns(n.netns); got != "abcd" {
			t.Errorf("node %d namespace %s belongs to run %q, want abcd", i, n.netns, got)
		}
		_, cidr, err := net.ParseCIDR(ClusterCIDR)
		if err != nil {
			t.Fatal(err)
		}
		if ip, _, err := net.ParseCIDR(n.PodCIDR); err != nil || !cidr.Contains(ip) {
			t.Errorf("node %d pod range %s outside %s (%v)", i, n.PodCIDR, ClusterCIDR, err)
		}
	}
	first := newNode(0, "/base/run-x", "abcd")
	if first.Name != NodeName || first.IP != NodeIP || first.PodCIDR != PodCIDR || first.netns != netnsPrefix+"abcd" || first.proc("kubelet") != "kubelet" {
		t.Errorf("first node %+v, want %s %s %s", first, NodeName, NodeIP, PodCIDR)
	}
	if got := runOfNetns(netnsPrefix + "abcd-lan"); got != "abcd" {
		t.Errorf("LAN namespace belongs to run %q", got)
	}
	if err := (&Options{Nodes: MaxNodes + 1, RepoRoot: "/r"}).defaults(); err == nil {
		t.Error("more than MaxNodes nodes accepted")
	}
}

func TestParseMountsUnder(t *testing.T) {
	const mountinfo = `22 1 8:1 / / rw - ext4 /dev/vda rw
30 22 0:40 / /base/run-x/kubelet/pods/p/volumes/secret rw - tmpfs tmpfs rw
31 22 0:41 / /base/run-x rw - tmpfs tmpfs rw
32 22 0:42 / /base/run-xy/other rw - tmpfs tmpfs rw
33 30 0:43 / /base/run-x/with\040space rw - tmpfs tmpfs rw
34 22 0:44 / /base/run-x/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
garbage
`
	got := parseMountsUnder(bufio.NewScanner(strings.NewReader(mountinfo)), "/base/run-x/")
	want := []string{
		"/base/run-x/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
		"/base/run-x/kubelet/pods/p/volumes/secret",
		"/base/run-x/with space",
		"/base/run-x",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:       "/plain",
		`/a\040b`:      "/a b",
		`/tab\011x`:    "/tab\tx",
		`/back\134sl`:  `/back\sl`,
		`/short\04`:    `/short\04`,
		`/notoctal\9x`: `/notoctal\9x`,
		`\`:            `\`,
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMountsUnder(f *testing.F) {
	f.Add("31 22 0:41 / /base/run-x\\040y rw - tmpfs tmpfs rw\n")
	f.Fuzz(func(t *testing.T, info string) {
		for _, mp := range parseMountsUnder(bufio.NewScanner(strings.NewReader(info)), "/base/run-x") {
			if mp != "/base/run-x" && !strings.HasPrefix(mp, "/base/run-x/") {
				t.Fatalf("%q is not under the directory", mp)
			}
		}
	})
}

func TestUpRequiresRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root")
	}
	_, err := Up(context.Background(), Options{})
	if err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Fatalf("Up as non-root: %v, want a clear needs-root error", err)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "ociimage")); err != nil {
		t.Errorf("repo root %s has no hack/ociimage: %v", root, err)
	}
}
