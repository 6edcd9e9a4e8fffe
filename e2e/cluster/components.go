package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Bounds of the waits in Up: generous for a loaded 2-core machine, but bounded.
const (
	componentTimeout = 90 * time.Second
	pollInterval     = 200 * time.Millisecond
)

func (c *Cluster) startControlPlane(ctx context.Context) error {
	etcd, err := c.start("etcd", c.bin("etcd"),
		"--name=podtls-e2e",
		"--data-dir="+c.paths.etcd,
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=podtls-e2e=http://127.0.0.1:2380",
		"--listen-metrics-urls=http://127.0.0.1:2381",
		"--unsafe-no-fsync",
		"--log-level=warn")
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, etcd, "http://127.0.0.1:2381/health"); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}

	p := c.pki
	apiserver, err := c.start("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address="+NodeIP,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--cert-dir="+c.paths.apiserver,
		"--tls-cert-file="+p.apiserverCert,
		"--tls-private-key-file="+p.apiserver,
		"--client-ca-file="+p.caCert,
		"--kubelet-client-certificate="+p.kubeletClientCert,
		"--kubelet-client-key="+p.kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc."+ClusterDomain,
		"--service-account-key-file="+p.saPub,
		"--service-account-signing-key-file="+p.saKey,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1")
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, apiserver, fmt.Sprintf("https://%s:%d/readyz", NodeIP, apiserverPort)); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}

	cm := kubeconfigPath(p.dir, "controller-manager")
	if _, err := c.start("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+cm,
		"--authentication-kubeconfig="+cm,
		"--authorization-kubeconfig="+cm,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		// Per-controller service accounts: without them kube-root-ca.crt never appears.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+p.saKey,
		"--root-ca-file="+p.caCert,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--cluster-name=podtls-e2e",
		"--profiling=false",
		"--v=1"); err != nil {
		return err
	}
	sched := kubeconfigPath(p.dir, "scheduler")
	if _, err := c.start("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+sched,
		"--authentication-kubeconfig="+sched,
		"--authorization-kubeconfig="+sched,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--profiling=false",
		"--v=1"); err != nil {
		return err
	}
	return nil
}

// startNodes starts every node's kubelet and kube-proxy, and CoreDNS beside the first.
func (c *Cluster) startNodes(ctx context.Context) error {
	if err := c.createDNSObjects(ctx); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := c.startKubelet(n); err != nil {
			return err
		}
	}
	if _, err := c.start("coredns", c.bin("coredns"),
		"-conf", filepath.Join(c.paths.controlFiles, "Corefile")); err != nil {
		return err
	}
	return nil
}

// createDNSObjects gives CoreDNS read access to Services and EndpointSlices and publishes it
// as kube-system/kube-dns on DNSServiceIP. CoreDNS runs as a host process on NodeIP:53, so
// the Service has no selector and a hand-made EndpointSlice points at the node.
func (c *Cluster) createDNSObjects(ctx context.Context) error {
	const name = "podtls-e2e:coredns"
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "pods", "namespaces", "endpoints"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: name}},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system",
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: DNSServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-node", Namespace: "kube-system",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: "podtls-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{NodeIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(NodeName)}},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)},
			{Name: ptr.To("dns-tcp"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolTCP)},
		},
	}
	cs := c.Client
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole %s: %w", name, err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", name, err)
	}
	if _, err := cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Service kube-system/kube-dns: %w", err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create EndpointSlice kube-system/kube-dns-node: %w", err)
	}
	return nil
}

// waitReady waits for everything a test relies on: CoreDNS serving, every node Ready with
// its kube-proxy synced, the default ServiceAccount (pods are rejected without it).
func (c *Cluster) waitReady(ctx context.Context) error {
	if err := c.waitHTTP(ctx, c.byName["coredns"], fmt.Sprintf("http://%s:%d/ready", NodeIP, corednsReady)); err != nil {
		return fmt.Errorf("coredns: %w", err)
	}
	for _, n := range c.nodes {
		if err := c.waitHTTP(ctx, c.byName[n.proc("kube-proxy")], fmt.Sprintf("http://%s:%d/healthz", n.IP, proxyHealth)); err != nil {
			return fmt.Errorf("kube-proxy of node %s: %w", n.Name, err)
		}
		if err := poll(ctx, componentTimeout, func() (bool, error) {
			if err := c.checkAlive(); err != nil {
				return false, err
			}
			node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		}); err != nil {
			return fmt.Errorf("node %s Ready: %w", n.Name, err)
		}
	}
	if err := poll(ctx, componentTimeout, func() (bool, error) {
		if err := c.checkAlive(); err != nil {
			return false, err
		}
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("ServiceAccount default/default: %w", err)
	}
	return nil
}

// checkAlive fails as soon as a component has exited: waiting longer cannot help.
func (c *Cluster) checkAlive() error {
	for _, p := range c.procs {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited: %v (see %s)", p.name, err, filepath.Join(c.paths.logs, p.name+".log"))
		}
	}
	return nil
}

// waitHTTP polls url from inside the namespace until it answers 200, failing early when
// any component exits. TLS is not verified: this only checks liveness.
func (c *Cluster) waitHTTP(ctx context.Context, _ *process, url string) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: c.DialContext,
			// Liveness probe of our own components on a private address; the client
			// certificate is not needed for /readyz.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
			DisableKeepAlives: true,
		},
	}
	return poll(ctx, componentTimeout, func() (bool, error) {
		if err := c.checkAlive(); err != nil {
			return false, err
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// poll calls cond every pollInterval until it returns true or an error, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}
