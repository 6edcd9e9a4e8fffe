package mesh

import (
	"context"
	"crypto/x509"
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
	"k8s.io/utils/ptr"

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
	base, err := cs.AppsV1().Deployments(ns).Get(ctx, "preference", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "preference-pc"}
	tmpl := *base.Spec.Template.DeepCopy()
	tmpl.Labels = labels
	tmpl.Annotations[contract.Identity] = contract.IdentityPodCertificate
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "preference-pc"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "preference-pc"}, Spec: corev1.ServiceSpec{Selector: labels,
		Ports: []corev1.ServicePort{{Name: "mtls", Port: 8443, TargetPort: intstr.FromInt32(8443)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	waitFor(ctx, t, 3*time.Minute, "preference-pc ready", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=preference-pc"})
		if err != nil || len(pods.Items) != 1 {
			return false
		}
		pod = &pods.Items[0]
		return podReady(pod)
	})
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

// TestPodCertificateRefresh: the kubelet refreshes a podCertificate pod's
// certificate from the signer's beginRefreshAt, and the sidecar serves the
// new leaf without a restart. The controller runs in the documented test
// mode (--pod-certificate-refresh-fraction) that puts beginRefreshAt at the
// API's earliest, 10 minutes after notBefore, on a 1 h certificate (the
// API's shortest): the test waits about 9 minutes for the kubelet.
func TestPodCertificateRefresh(t *testing.T) {
	cluster.Require(t, "pod certificate refresh")
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	root, err := gobuild.RepoRoot()
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
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "preference", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Annotations[contract.Identity] = contract.IdentityPodCertificate
	d.Spec.Template.Annotations[contract.CertTTL] = "1h"
	if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	waitFor(ctx, t, 3*time.Minute, "a ready podCertificate preference pod", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=preference"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Annotations[contract.Identity] != contract.IdentityPodCertificate {
			return false
		}
		pod = &pods.Items[0]
		return podReady(pod)
	})
	addr := net.JoinHostPort(pod.Status.PodIP, inboundTLS)
	first, err := servedChain(ctx, c, addr)
	if err != nil {
		t.Fatal(err)
	}
	if life := first[0].NotAfter.Sub(first[0].NotBefore); life != time.Hour {
		t.Fatalf("leaf lifetime %s, want the 1h of podtls.io/cert-ttl", life)
	}
	issuedAt := time.Now()
	var next []*x509.Certificate
	deadline := first[0].NotBefore.Add(15 * time.Minute)
	for {
		if next, err = servedChain(ctx, c, addr); err == nil && next[0].SerialNumber.Cmp(first[0].SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("still serving serial %x at %s (notBefore %s): the kubelet did not refresh (last error %v)",
				first[0].SerialNumber, time.Now().UTC().Format(time.RFC3339), first[0].NotBefore.UTC().Format(time.RFC3339), err)
		}
		time.Sleep(5 * time.Second) // polling for the kubelet's refresh, not proving an absence
	}
	refreshed := time.Since(issuedAt)
	if next[0].NotBefore.Before(first[0].NotBefore.Add(10*time.Minute - time.Minute)) {
		t.Errorf("new leaf from %s, earlier than the first's beginRefreshAt", next[0].NotBefore)
	}
	got, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil || got.UID != pod.UID {
		t.Fatalf("pod %s replaced or gone: %v", pod.Name, err)
	}
	for _, st := range append(got.Status.InitContainerStatuses, got.Status.ContainerStatuses...) {
		if st.RestartCount != 0 {
			t.Errorf("container %s restarted %d times during the refresh", st.Name, st.RestartCount)
		}
	}
	caller := runCaller(ctx, t, cs, "customer", "customer", whoamiImage, "60s", 0)
	if body := strings.TrimSpace(logsOf(ctx, cs, caller.Name, "app")); caller.Status.Phase != corev1.PodSucceeded || body != pod.Name+" client-id="+customerID {
		t.Errorf("customer after the refresh: %s %q", caller.Status.Phase, body)
	}
	t.Logf("kubelet refreshed serial %x -> %x %s after the first was seen; no restart", first[0].SerialNumber, next[0].SerialNumber, refreshed.Round(time.Second))
}
