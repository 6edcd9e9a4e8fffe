package mesh

import (
	"context"
	"crypto/x509"
	"net"
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
