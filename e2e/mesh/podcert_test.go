package mesh

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/rotate"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

// testPodCertificates runs pods whose identity comes from the kubelet
// (podtls.io/identity: podCertificate) next to agent pods: the kubelet makes
// the key, podtls's signer issues the leaf through a PodCertificateRequest,
// the roots come from its ClusterTrustBundles. The sidecar serves that leaf,
// no token is mounted, and both kinds of pods call each other over mTLS. A
// pod asking for a key type the CA refuses stays pending with an Event that
// names the reason.
func testPodCertificates(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	cs := c.Client
	t0 := time.Now()
	pod := createPodCertPreference(ctx, t, cs, "")
	ready := time.Since(t0)

	var projected bool
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil && src.ServiceAccountToken.Audience == "podtls-ca" {
				t.Errorf("volume %s mounts a podtls-ca token into a podCertificate pod", v.Name)
			}
			projected = projected || (src.PodCertificate != nil && src.PodCertificate.SignerName == contract.SignerName)
		}
	}
	if !projected {
		t.Fatalf("pod %s has no podCertificate volume of %s: %+v", pod.Name, contract.SignerName, pod.Spec.Volumes)
	}

	reqs, err := cs.CertificatesV1().PodCertificateRequests(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var issued *certv1.PodCertificateRequest
	for i := range reqs.Items {
		r := &reqs.Items[i]
		if r.Spec.PodName == pod.Name && meta.IsStatusConditionTrue(r.Status.Conditions, certv1.PodCertificateRequestConditionTypeIssued) {
			issued = r
		}
	}
	if issued == nil {
		t.Fatalf("no issued PodCertificateRequest for %s among %d", pod.Name, len(reqs.Items))
	}

	bundles, err := cs.CertificatesV1().ClusterTrustBundles().List(ctx, metav1.ListOptions{LabelSelector: contract.TrustBundleLabel + "=" + contract.TrustBundleLabelValue})
	if err != nil || len(bundles.Items) == 0 {
		t.Fatalf("ClusterTrustBundles of %s: %d, %v", contract.SignerName, len(bundles.Items), err)
	}
	roots := x509.NewCertPool()
	for _, b := range bundles.Items {
		roots.AppendCertsFromPEM([]byte(b.Spec.TrustBundle))
	}
	chain, err := servedChain(ctx, c, net.JoinHostPort(pod.Status.PodIP, inboundTLS))
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, crt := range chain[1:] {
		inter.AddCert(crt)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "preference-pc.demo.svc",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("served certificate does not verify against the ClusterTrustBundles for preference-pc.demo.svc: %v", err)
	}
	if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != prefID || !strings.Contains(issued.Status.CertificateChain, "CERTIFICATE") {
		t.Errorf("served leaf URIs %v, want %s", chain[0].URIs, prefID)
	}
	if got := chain[0].NotAfter.Sub(chain[0].NotBefore); got != 24*time.Hour {
		t.Errorf("leaf lifetime %s, want the API's default maxExpirationSeconds (24h)", got)
	}

	// Agent pod -> podCertificate pod, and podCertificate pod -> agent pod.
	for _, tc := range []struct {
		name, upstream, identity, want string
	}{
		{"agent-to-pc", "preference-pc.demo.svc:8443@9001", "", pod.Name + " client-id=" + customerID},
		{"pc-to-agent", upstreams, contract.IdentityPodCertificate, " client-id=" + customerID},
	} {
		caller := callerPod(tc.name, "customer", whoamiImage, "60s")
		caller.Annotations["podtls.io/upstreams"] = tc.upstream
		if tc.identity != "" {
			caller.Annotations[contract.Identity] = tc.identity
		}
		got := runPod(ctx, t, cs, caller, 0)
		if body := strings.TrimSpace(logsOf(ctx, cs, got.Name, "app")); got.Status.Phase != corev1.PodSucceeded || !strings.Contains(body, tc.want) {
			t.Errorf("%s: pod %s, answer %q, want %q", tc.name, got.Status.Phase, body, tc.want)
		}
	}

	// A key type the CA refuses: the request is denied, the pod stays
	// pending and says why.
	p521 := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p521"}, Spec: corev1.PodSpec{
		ServiceAccountName: "customer", TerminationGracePeriodSeconds: ptr.To[int64](1),
		Containers: []corev1.Container{{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever,
			Args: []string{"cat", "/var/run/mesh/credentials.pem"}, VolumeMounts: []corev1.VolumeMount{{Name: "mesh", MountPath: "/var/run/mesh"}}}},
		Volumes: []corev1.Volume{{Name: "mesh", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{PodCertificate: &corev1.PodCertificateProjection{
				SignerName: contract.SignerName, KeyType: "ECDSAP521", CredentialBundlePath: "credentials.pem"}}}}}}},
	}}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, p521, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var event string
	waitFor(ctx, t, 2*time.Minute, "a PodCertificateDenied Event on pod p521", func() bool {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=p521"})
		if err != nil {
			return false
		}
		i := slices.IndexFunc(evs.Items, func(e corev1.Event) bool {
			return e.Reason == "PodCertificateDenied" && strings.Contains(e.Message, "UnsupportedKeyType")
		})
		if i >= 0 {
			event = evs.Items[i].Message
		}
		return i >= 0
	})
	if got, err := cs.CoreV1().Pods(ns).Get(ctx, "p521", metav1.GetOptions{}); err != nil || got.Status.Phase != corev1.PodPending {
		t.Errorf("pod p521 with a refused key: %v %v, want Pending", got.Status.Phase, err)
	}
	t.Logf("podCertificate pod ready %s after create; refused key: %s", ready.Round(time.Millisecond), event)
}

// createPodCertPreference runs preference's pods again as Deployment and
// Service preference-pc with the identity from the kubelet (and ttl as
// podtls.io/cert-ttl when set), and returns its ready pod.
func createPodCertPreference(ctx context.Context, t *testing.T, cs kubernetes.Interface, ttl string) *corev1.Pod {
	t.Helper()
	base, err := cs.AppsV1().Deployments(ns).Get(ctx, "preference", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "preference-pc"}
	tmpl := *base.Spec.Template.DeepCopy()
	tmpl.Labels = labels
	tmpl.Annotations[contract.Identity] = contract.IdentityPodCertificate
	if ttl != "" {
		tmpl.Annotations[contract.CertTTL] = ttl
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "preference-pc"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "preference-pc"}, Spec: corev1.ServiceSpec{Selector: labels,
		Ports: []corev1.ServicePort{{Name: "mtls", Port: 8443, TargetPort: intstr.FromInt32(8443)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitReadyPod(ctx, t, cs, "app=preference-pc")
}

// waitReadyPod waits for the one pod matching selector to be ready.
func waitReadyPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, selector string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(ctx, t, 3*time.Minute, selector+" ready", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(pods.Items) != 1 {
			return false
		}
		pod = &pods.Items[0]
		return podReady(pod)
	})
	return pod
}

// TestRootRotation rotates the CA's root with `podtls ca rotate` under
// traffic, with an agent pod (preference) and a podCertificate pod
// (preference-pc, 1 h leaf) that call and are called across the phases:
// publish, switch, the workloads' renewal (`podtls-sidecar renew` for the
// agent; the kubelet's own refresh for podCertificate, which the controller's
// documented test mode --pod-certificate-refresh-fraction brings to 10
// minutes after issue, the API's earliest, plus the kubelet's jitter of up to
// 5 minutes), retire. No pod restarts; every call succeeds; status counts the
// workloads on each chain. The podCertificate pod's refresh is the kubelet
// refresh without restart that docs/pod-certificates.md describes.
func TestRootRotation(t *testing.T) {
	cluster.Require(t, "root rotation")
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := gobuild.Binary(ctx, root, t.TempDir(), "./cli/cmd/podtls")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Options{Images: buildImages(ctx, t, root), Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, c)
		}
	})
	cs := c.Client
	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 1,
		ExtraArgs: []string{"--pod-certificate-refresh-fraction=0.01"}}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)
	manifest, err := filepath.Abs(filepath.Join("testdata", "preference.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"create", "namespace", ns}, {"label", "namespace", ns, "podtls.io/inject=enabled"}, {"apply", "-f", manifest}} {
		if _, err := c.RunKubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	agentPod := waitReadyPod(ctx, t, cs, "app=preference")
	pcPod := createPodCertPreference(ctx, t, cs, "1h")
	t0 := time.Now()

	podtls := func(args ...string) string {
		t.Helper()
		out, err := c.Exec(ctx, cli, append([]string{"--kubeconfig", c.Kubeconfig, "--controller-namespace", systemNS}, args...)...)
		if err != nil {
			t.Fatalf("podtls %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	status := func() rotate.Report {
		t.Helper()
		var rep rotate.Report
		if err := json.Unmarshal([]byte(podtls("ca", "rotate", "status", "-o", "json")), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	calls := 0
	traffic := func(phase string) {
		t.Helper()
		for _, tc := range []struct {
			upstream, identity, want string
		}{
			{"preference-pc.demo.svc:8443@9001", "", pcPod.Name + " client-id=" + customerID},
			{upstreams, contract.IdentityPodCertificate, agentPod.Name + " client-id=" + customerID},
		} {
			calls++
			caller := callerPod(fmt.Sprintf("call-%d", calls), "customer", whoamiImage, "60s")
			caller.Annotations["podtls.io/upstreams"] = tc.upstream
			if tc.identity != "" {
				caller.Annotations[contract.Identity] = tc.identity
			}
			got := runPod(ctx, t, cs, caller, 0)
			if body := strings.TrimSpace(logsOf(ctx, cs, got.Name, "app")); got.Status.Phase != corev1.PodSucceeded || body != tc.want {
				t.Errorf("%s: call %s: pod %s, answer %q, want %q", phase, tc.upstream, got.Status.Phase, body, tc.want)
			}
		}
	}

	before := status()
	if before.Phase != ca.PhaseIdle || before.Workloads["current"] != 2 {
		t.Fatalf("before the rotation: %+v", before)
	}
	traffic("before")

	t.Log(strings.TrimSpace(podtls("ca", "rotate", "publish")))
	waitFor(ctx, t, 3*time.Minute, "every trust bundle with both roots", func() bool {
		rep := status()
		return rep.Phase == ca.PhasePublished && len(rep.Lagging) == 0 && rep.ClusterTrustBundles
	})
	published := time.Since(t0)
	traffic("published")

	t.Log(strings.TrimSpace(podtls("ca", "rotate", "switch")))
	newKeyID := status().IntermediateKeyID
	if newKeyID == before.IntermediateKeyID {
		t.Fatal("switch left the intermediate as it was")
	}
	// The controller signs with the new intermediate once it has re-read the
	// Secret (within a minute): until then a forced renewal still gets the
	// old chain, so renew until the agent pod serves the new one.
	admin := adminClient(c)
	lastRenew := time.Time{}
	waitFor(ctx, t, 3*time.Minute, "the agent pod serving a leaf of the new intermediate", func() bool {
		var snap struct {
			Mesh *struct {
				AuthorityKeyID string `json:"authority_key_id"`
			} `json:"mesh"`
		}
		if raw, err := adminGet(ctx, admin, agentPod.Status.PodIP, "/certs"); err == nil && json.Unmarshal(raw, &snap) == nil &&
			snap.Mesh != nil && snap.Mesh.AuthorityKeyID == newKeyID {
			return true
		}
		if time.Since(lastRenew) > 15*time.Second { // the sidecar refuses forced renewals within 10 s
			lastRenew = time.Now()
			if out, err := c.RunKubectl(ctx, "exec", "-n", ns, agentPod.Name, "-c", contract.ContainerName, "--", "/podtls-sidecar", "renew"); err != nil {
				t.Logf("renew the agent pod's certificate: %v: %s", err, out)
			}
		}
		return false
	})
	traffic("switched")
	var moved rotate.Report
	waitFor(ctx, t, 25*time.Minute, "both workloads on the new chain (the kubelet's refresh of preference-pc)", func() bool {
		moved = status()
		return moved.Workloads["current"] == 2 && moved.Workloads["old"] == 0 && moved.Workloads["unknown"] == 0
	})
	switched := time.Since(t0)
	traffic("moved")

	t.Log(strings.TrimSpace(podtls("ca", "rotate", "retire")))
	waitFor(ctx, t, 3*time.Minute, "every trust bundle with the new root only", func() bool {
		rep := status()
		if rep.Phase != ca.PhaseIdle || len(rep.Lagging) != 0 {
			return false
		}
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, contract.TrustBundleConfigMap, metav1.GetOptions{})
		return err == nil && strings.Count(cm.Data[contract.TrustBundleKey], "BEGIN CERTIFICATE") == 1
	})
	traffic("retired")

	for _, p := range []*corev1.Pod{agentPod, pcPod} {
		got, err := cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || got.UID != p.UID {
			t.Fatalf("pod %s replaced or gone: %v", p.Name, err)
		}
		for _, st := range append(got.Status.InitContainerStatuses, got.Status.ContainerStatuses...) {
			if st.RestartCount != 0 {
				t.Errorf("pod %s container %s restarted %d times during the rotation", p.Name, st.Name, st.RestartCount)
			}
		}
	}
	t.Logf("rotation: trust bundles with both roots %s after start, both workloads on the new chain %s after start (the kubelet's refresh), %d calls across 5 phases, no restart",
		published.Round(time.Second), switched.Round(time.Second), calls)
}
