package mesh

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

// TestStatefulSet meshes a StatefulSet of three pods behind a headless Service on the real
// node: each pod's served certificate names its own pod DNS name (and no other pod's), pod 0
// calls pod 2 by that name through its sidecar over mTLS, and a pod of another namespace
// that asks the CA for pod 0's name gets nothing.
func TestStatefulSet(t *testing.T) {
	cluster.Require(t, "mesh")
	tTest := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tBuild := time.Now()
	images := buildImages(ctx, t, root)
	buildTime := time.Since(tBuild)
	tUp := time.Now()
	c, err := cluster.Up(ctx, cluster.Options{Images: images, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	upTime := time.Since(tUp) - c.LockWait
	t.Cleanup(func() { _ = c.Down() })
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, c)
			run := func(args ...string) {
				out, _ := c.RunKubectl(context.Background(), args...)
				t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
			}
			run("describe", "pods", "-n", otherNS)
			run("logs", "-n", otherNS, "web-0", "-c", sidecar)
		}
	})
	cs := c.Client

	tInstall := time.Now()
	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 1}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 2*time.Minute, "podtls-controller available", func() bool {
		d, err := cs.AppsV1().Deployments(systemNS).Get(ctx, controllerName, metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == in.Replicas
	})
	waitFor(ctx, t, time.Minute, "caBundle patched into the webhooks", func() bool {
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookName, metav1.GetOptions{})
		if err != nil || len(mwc.Webhooks) == 0 {
			return false
		}
		for _, w := range mwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return false
			}
		}
		return true
	})
	controllerReady := time.Since(tInstall)

	for _, n := range []string{ns, otherNS} {
		if _, err := c.RunKubectl(ctx, "create", "namespace", n); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RunKubectl(ctx, "label", "namespace", n, "podtls.io/inject=enabled"); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(n).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Services(n).Create(ctx, peersService(), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tSts := time.Now()
	if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, webStatefulSet(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 4*time.Minute, "statefulset web: 3 pods ready", func() bool {
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && s.Status.ReadyReplicas == 3
	})
	stsReady := time.Since(tSts)

	var bundle string
	waitFor(ctx, t, time.Minute, "trust bundle ConfigMap in "+ns, func() bool {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "podtls-trust-bundle", metav1.GetOptions{})
		bundle = cm.Data["ca.crt"]
		return err == nil && bundle != ""
	})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(bundle)) {
		t.Fatalf("trust bundle holds no certificate: %q", bundle)
	}

	t.Run("each pod serves a certificate with its own pod DNS name", func(t *testing.T) {
		for i := range 3 {
			name := fmt.Sprintf("web-%d", i)
			pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkNativeSidecar(t, pod)
			chain, err := servedChain(ctx, c, net.JoinHostPort(pod.Status.PodIP, inboundTLS))
			if err != nil {
				t.Fatal(err)
			}
			leaf := chain[0]
			inter := x509.NewCertPool()
			for _, crt := range chain[1:] {
				inter.AddCert(crt)
			}
			own := []string{name + ".web.demo.svc", name + ".web.demo.svc.cluster.local", "web.demo.svc"}
			for _, dns := range own {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: dns,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Errorf("%s: served certificate does not verify for %s: %v", name, dns, err)
				}
			}
			for _, dns := range leaf.DNSNames {
				if !slices.Contains(own, dns) && dns != "web.demo.svc.cluster.local" {
					t.Errorf("%s: served certificate names %q, not its own (DNS names %q)", name, dns, leaf.DNSNames)
				}
			}
			t.Logf("%s serves %q", name, leaf.DNSNames)
		}
	})

	t.Run("pod 0 calls pod 2 by its pod DNS name through its sidecar", func(t *testing.T) {
		// The app talks plaintext to 127.0.0.1:9002; web-0's sidecar dials
		// web-2.web.demo.svc:8443 with mTLS and checks that name; echo answers with its hostname.
		t0 := time.Now()
		out, err := c.RunKubectl(ctx, "exec", "-n", ns, "web-0", "-c", "app", "--", "/echo", "get", "-timeout", "60s", "http://127.0.0.1:9002/")
		if err != nil {
			t.Fatalf("web-0 -> web-2: %v: %s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "web-2" {
			t.Errorf("web-0 -> web-2.web.demo.svc answered %q, want web-2", got)
		}
		t.Logf("web-0 -> web-2.web.demo.svc over mTLS in %s", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("a pod of another namespace cannot obtain a pod's name", func(t *testing.T) {
		// The strongest claim a pod elsewhere can make: hostname web-0, subdomain web, a
		// headless Service web of its own namespace selecting it, and a sidecar that asks
		// the CA for web-0.web.demo.svc (injected as usual, then that flag added; the
		// webhook leaves an injected pod alone).
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: otherNS, Labels: map[string]string{"app": "web"},
				Annotations: map[string]string{"podtls.io/inbound": "8443:8080"}},
			Spec: corev1.PodSpec{
				Hostname: "web-0", Subdomain: "web", ServiceAccountName: "web",
				TerminationGracePeriodSeconds: ptr.To[int64](5),
				Containers:                    []corev1.Container{echoContainer()},
			},
		}
		injected, err := cs.CoreV1().Pods(otherNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if len(injected.Spec.InitContainers) == 0 || injected.Spec.InitContainers[0].Name != sidecar {
			t.Fatalf("dry run did not inject the sidecar: %v", injected.Spec.InitContainers)
		}
		injected.ObjectMeta = metav1.ObjectMeta{Name: injected.Name, Namespace: otherNS, Labels: injected.Labels, Annotations: injected.Annotations}
		sc := &injected.Spec.InitContainers[0]
		sc.Args = append(sc.Args, "--dns-name", "web-0.web.demo.svc")
		if _, err := cs.CoreV1().Pods(otherNS).Create(ctx, injected, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		admin := adminClient(c)
		var m map[string]float64
		waitFor(ctx, t, 2*time.Minute, "the CA to refuse the other namespace's sidecar", func() bool {
			p, err := cs.CoreV1().Pods(otherNS).Get(ctx, "web-0", metav1.GetOptions{})
			if err != nil || p.Status.PodIP == "" {
				return false
			}
			m, err = metricsOf(ctx, admin, p.Status.PodIP)
			return err == nil && m[`podtls_sidecar_agent_sign_requests_total{result="permanent"}`] >= 1
		})
		if ok := m[`podtls_sidecar_agent_sign_requests_total{result="success"}`]; ok != 0 {
			t.Errorf("the other namespace's sidecar was issued %v certificates", ok)
		}
		logs, err := c.RunKubectl(ctx, "logs", "-n", systemNS, "deploy/"+controllerName)
		if err != nil {
			t.Fatal(err)
		}
		var refusal string
		for _, line := range strings.Split(string(logs), "\n") {
			if strings.Contains(line, "sign request rejected") && strings.Contains(line, otherNS) {
				refusal = line
			}
		}
		if !strings.Contains(refusal, "web-0.web.demo.svc") || !strings.Contains(refusal, "403") {
			t.Errorf("no 403 refusal naming web-0.web.demo.svc for namespace %s in the controller's log; last: %q", otherNS, refusal)
		}
		t.Logf("CA: %s", refusal)
	})

	t.Logf("timings (load %s): images %s, cluster up %s (lock wait %s excluded), controller ready %s, statefulset ready %s, total %s",
		loadAverage(), buildTime.Round(time.Second), upTime.Round(time.Second), c.LockWait.Round(time.Second),
		controllerReady.Round(time.Second), stsReady.Round(time.Second), time.Since(tTest).Round(time.Second))
}

// otherNS is the namespace of the pod that tries to take a demo pod's name.
const otherNS = "other"

// peersService is the headless Service "web" that gives StatefulSet pods their DNS names.
func peersService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": "web"},
			Ports:     []corev1.ServicePort{{Name: "mtls", Port: 8443, TargetPort: intstr.FromInt32(8443)}},
		},
	}
}

func echoContainer() corev1.Container {
	return corev1.Container{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever,
		Args: []string{"serve", "-addr", "127.0.0.1:8080"}}
}

// webStatefulSet: three injected pods that each serve mTLS on 8443 and reach web-2 by its
// own name on 127.0.0.1:9002.
func webStatefulSet() *appsv1.StatefulSet {
	labels := map[string]string{"app": "web"}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.StatefulSetSpec{
			ServiceName:         "web",
			Replicas:            ptr.To[int32](3),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					"podtls.io/inbound":   "8443:8080",
					"podtls.io/upstreams": "web-2.web.demo.svc:8443@9002",
				}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            "web",
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers:                    []corev1.Container{echoContainer()},
				},
			},
		},
	}
}
