package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

const (
	podinfoImage = "localhost/podtls/podinfo:e2e"
	// thirdPartyModule pins the apps nobody on the team wrote (e2e/apps/thirdparty/go.mod).
	thirdPartyModule = "e2e/apps/thirdparty"
	podinfoPkg       = "github.com/stefanprodan/podinfo/cmd/podinfo"
	probeImage       = "localhost/podtls/grpc-health-probe:e2e"
	probePkg         = "github.com/grpc-ecosystem/grpc-health-probe"
)

// TestPodinfo runs podinfo (github.com/stefanprodan/podinfo, built from its Go module)
// injected, with its stock HTTP liveness and readiness probes and a gRPC startup probe,
// listening on 127.0.0.1 only so nothing reaches it past the sidecar. With probe
// rewriting (the default) it becomes Ready and stays Ready; podinfo's own
// /readyz/disable takes it out of the Service's endpoints and /readyz/enable brings it
// back, both called over mTLS through a caller's sidecar. Opted out of rewriting, the
// same Deployment never becomes Ready: the kubelet's probes of the pod IP are refused.
func TestPodinfo(t *testing.T) {
	cluster.Require(t, "podinfo")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	images := buildImages(ctx, t, root)
	tBuild := time.Now()
	dir := t.TempDir()
	if err := gobuild.Binaries(ctx, filepath.Join(root, thirdPartyModule), dir, podinfoPkg, probePkg, routeGuideServerPkg, routeGuideClientPkg, grpcurlPkg); err != nil {
		t.Fatal(err)
	}
	podinfoTar, probeTar := filepath.Join(dir, "podinfo.tar"), filepath.Join(dir, "grpc-health-probe.tar")
	if err := cluster.PackImage(filepath.Join(dir, "podinfo"), podinfoImage, podinfoTar); err != nil {
		t.Fatal(err)
	}
	if err := cluster.PackImage(filepath.Join(dir, "grpc-health-probe"), probeImage, probeTar); err != nil {
		t.Fatal(err)
	}
	routeGuideTars := packRouteGuide(t, dir)
	podinfoBuild := time.Since(tBuild)

	c, err := cluster.Up(ctx, cluster.Options{Images: append(append(images, podinfoTar, probeTar), routeGuideTars...), Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
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
	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 1}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)
	for _, args := range [][]string{{"create", "namespace", ns}, {"label", "namespace", ns, "podtls.io/inject=enabled"},
		{"create", "serviceaccount", "-n", ns, "customer"}} {
		if _, err := c.RunKubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range []*corev1.Service{podinfoService("podinfo", false), podinfoService("podinfo-direct", true)} {
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t0 := time.Now()
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, podinfoDeployment("podinfo", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPodinfo(ctx, t, cs, "podinfo", true, 3*time.Minute)
	ready := time.Since(t0)
	for _, ctr := range pod.Spec.Containers {
		if p := ctr.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 15000 {
			t.Fatalf("container %s readiness probe not rewritten to the sidecar: %+v", ctr.Name, p)
		}
	}

	t.Run("probe failure takes the pod out of the endpoints, and back", func(t *testing.T) {
		call := func(name, path string) {
			caller := callerPod(name, "customer", echoImage, "60s")
			caller.Annotations["podtls.io/upstreams"] = "podinfo-direct." + ns + ".svc:8443@9001"
			caller.Spec.Containers[0].Args = []string{"get", "-method", "POST", "-timeout", "60s", "http://127.0.0.1:9001" + path}
			if got := runPod(ctx, t, cs, caller, 0); got.Status.Phase != corev1.PodSucceeded {
				t.Fatalf("POST %s through the mesh: pod %s; app log %s", path, got.Status.Phase, logsOf(ctx, cs, got.Name, "app"))
			}
		}
		t1 := time.Now()
		call("disable", "/readyz/disable")
		waitFor(ctx, t, 2*time.Minute, "podinfo out of Service podinfo's endpoints", func() bool {
			return endpointReady(ctx, cs, "podinfo", pod.Name) == "not ready"
		})
		out := time.Since(t1)
		t2 := time.Now()
		call("enable", "/readyz/enable")
		waitFor(ctx, t, 2*time.Minute, "podinfo back in Service podinfo's endpoints", func() bool {
			return endpointReady(ctx, cs, "podinfo", pod.Name) == "ready"
		})
		back := time.Since(t2)
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if st.RestartCount != 0 {
				t.Errorf("container %s restarted %d times: liveness must stay green through a readiness failure", st.Name, st.RestartCount)
			}
		}
		t.Logf("readiness failure -> out of the endpoints in %s; enabled -> back in %s", out.Round(time.Millisecond), back.Round(time.Millisecond))
	})

	t.Run("a dead upstream answers the app with an error naming it, not EOF", func(t *testing.T) {
		// A Service without endpoints: kube-proxy rejects the connection.
		dead := podinfoService("nobody", false)
		dead.Spec.Selector = map[string]string{"app": "nobody"}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, dead, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// http mode: 503 once endpoint discovery says the Service has no
		// endpoints; 502 while the sidecar still dials the Service's name and
		// kube-proxy refuses it. Either way a status naming the upstream.
		for _, tc := range []struct{ mode, want string }{
			{"http", "status 50"},
			{"tcp", "connection reset by peer"},
		} {
			caller := callerPod("dead-"+tc.mode, "customer", echoImage, "3s")
			caller.Annotations["podtls.io/upstreams"] = "nobody." + ns + ".svc:8443@9001"
			caller.Annotations["podtls.io/mode"] = tc.mode
			got := runPod(ctx, t, cs, caller, 0)
			log := logsOf(ctx, cs, got.Name, "app")
			if got.Status.Phase != corev1.PodFailed || !strings.Contains(log, tc.want) ||
				(tc.mode == "http" && !strings.Contains(log, "503 Service Unavailable") && !strings.Contains(log, "502 Bad Gateway")) {
				t.Errorf("%s mode: caller %s with log %q, want Failed with %q", tc.mode, got.Status.Phase, log, tc.want)
			}
		}
	})

	t.Run("plaintext port redirects to https for the pod's public name only", func(t *testing.T) {
		d := podinfoDeployment("podinfo-edge", true)
		d.Spec.Template.Annotations["podtls.io/external-hosts"] = "podinfo.example.test"
		d.Spec.Template.Annotations["podtls.io/redirect"] = "8080:443"
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		edge := waitPodinfo(ctx, t, cs, "podinfo-edge", true, 2*time.Minute)
		url := "http://" + edge.Status.PodIP + ":8080/ws/echo?x=1"
		for _, tc := range []struct{ host, want string }{
			{"podinfo.example.test", "location: https://podinfo.example.test/ws/echo?x=1"},
			{"evil.example.com", "HTTP/1.1 421"},
		} {
			out, err := c.Exec(ctx, "curl", "-sS", "-I", "--max-time", "10", "-H", "Host: "+tc.host, url)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.ToLower(string(out)); !strings.Contains(got, strings.ToLower(tc.want)) ||
				(tc.host == "evil.example.com" && strings.Contains(got, "location:")) {
				t.Errorf("curl -I -H 'Host: %s' %s:\n%s\nwant %q", tc.host, url, out, tc.want)
			}
		}
	})

	// gRPC crosses the mesh on a spliced port: the caller's outbound listener is L4 and
	// offers no ALPN, so an http-mode h2c listener would take it for HTTP/1.1 (declaring the
	// upstream's protocol is the outbound L7 work of issue #16). gRPC through an http-mode
	// h2c listener is covered by sidecar/proxy's TestGRPC with grpc-go on both ends.
	t.Run("WebSocket (http mode) and gRPC (spliced) across the mesh", func(t *testing.T) {
		d := podinfoDeployment("podinfo-l7", true)
		d.Spec.Template.Annotations["podtls.io/mode"] = "http"
		d.Spec.Template.Annotations["podtls.io/inbound"] = "8443:9898, 9443:9999/tcp"
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc := podinfoService("podinfo-l7", false)
		svc.Spec.Selector = map[string]string{"app": "podinfo-l7"}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 9443, TargetPort: intstr.FromInt32(9443)})
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodinfo(ctx, t, cs, "podinfo-l7", true, 2*time.Minute)

		ws := callerPod("ws-across", "customer", echoImage, "30s")
		ws.Annotations["podtls.io/upstreams"] = "podinfo-l7." + ns + ".svc:8443@9001"
		ws.Spec.Containers[0].Args = []string{"ws", "-timeout", "60s", "ws://127.0.0.1:9001/ws/echo", "hello-over-mtls"}
		if got := runPod(ctx, t, cs, ws, 0); got.Status.Phase != corev1.PodSucceeded ||
			!strings.Contains(logsOf(ctx, cs, got.Name, "app"), "hello-over-mtls") {
			t.Errorf("WebSocket echo across the mesh: pod %s, log %q", got.Status.Phase, logsOf(ctx, cs, got.Name, "app"))
		}

		grpc := callerPod("grpc-across", "customer", probeImage, "30s")
		grpc.Annotations["podtls.io/upstreams"] = "podinfo-l7." + ns + ".svc:9443@9002"
		grpc.Spec.Containers[0].Args = []string{"-addr", "127.0.0.1:9002", "-service", "podinfo", "-connect-timeout", "10s", "-rpc-timeout", "10s"}
		var got *corev1.Pod
		for attempt := 0; attempt < 5; attempt++ { // the caller's sidecar may still be warming its first dial
			grpc.Name = fmt.Sprintf("grpc-across-%d", attempt)
			if got = runPod(ctx, t, cs, grpc.DeepCopy(), 0); got.Status.Phase == corev1.PodSucceeded {
				break
			}
		}
		if log := logsOf(ctx, cs, got.Name, "app"); got.Status.Phase != corev1.PodSucceeded || !strings.Contains(log, "SERVING") {
			t.Errorf("grpc-health-probe across the mesh: pod %s, log %q", got.Status.Phase, log)
		}
	})

	t.Run("edge: HTTP/2, h2load, gRPC health, wss and forged headers from outside the mesh", func(t *testing.T) {
		testEdge(ctx, t, c, root, dir)
	})

	t.Run("one HTTP/2 connection is balanced per request over 3 replicas; a killed replica is ejected", func(t *testing.T) {
		testBalancing(ctx, t, cs)
	})

	t.Run("grpc-go route_guide (unary, streaming, bidirectional) across the mesh", func(t *testing.T) {
		testRouteGuide(ctx, t, cs)
	})

	t.Run("without rewriting, the stock probes fail on a loopback-only app", func(t *testing.T) {
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, podinfoDeployment("podinfo-kept", false), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var event string
		waitFor(ctx, t, 2*time.Minute, "an Unhealthy event for podinfo-kept's probes of the pod IP", func() bool {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=Unhealthy"})
			if err != nil {
				return false
			}
			for _, e := range evs.Items {
				if strings.HasPrefix(e.InvolvedObject.Name, "podinfo-kept-") && strings.Contains(e.Message, "connection refused") {
					event = e.Message
					return true
				}
			}
			return false
		})
		t.Logf("opted out: %s", event)
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=podinfo-kept"})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("podinfo-kept pods: %v, %v", len(pods.Items), err)
		}
		if podReady(&pods.Items[0]) {
			t.Error("podinfo-kept is Ready although the kubelet cannot reach its loopback-only probes")
		}
	})
	t.Logf("TIMINGS podinfo build %s; injected podinfo Ready %s after create", podinfoBuild.Round(time.Millisecond), ready.Round(time.Millisecond))
}

// podinfoDeployment is podinfo as its chart runs it (HTTP liveness on /healthz and
// readiness on /readyz of the named http port), plus a gRPC startup probe of its health
// service, bound to 127.0.0.1 behind the sidecar's mTLS port 8443.
func podinfoDeployment(name string, rewrite bool) *appsv1.Deployment {
	annotations := map[string]string{"podtls.io/inbound": "8443:9898"}
	if !rewrite {
		annotations["podtls.io/rewrite-probes"] = "false"
	}
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{
						Name: "podinfo", Image: podinfoImage, ImagePullPolicy: corev1.PullNever,
						Command: []string{"/podinfo", "--host", "127.0.0.1", "--port", "9898", "--grpc-port", "9999",
							"--grpc-service-name", "podinfo", "--level", "info"},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9898}, {Name: "grpc", ContainerPort: 9999}},
						LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/healthz", Port: intstr.FromString("http")}}, InitialDelaySeconds: 1, TimeoutSeconds: 5},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/readyz", Port: intstr.FromString("http")}}, PeriodSeconds: 2, TimeoutSeconds: 5, FailureThreshold: 1},
						StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{
							Port: 9999, Service: ptr.To("podinfo")}}, PeriodSeconds: 1, FailureThreshold: 60},
					}},
				},
			},
		},
	}
}

// podinfoService selects podinfo on the sidecar's mTLS port. The direct one publishes
// the pod even when not ready, so the test can reach a pod it took out of service.
func podinfoService(name string, publishNotReady bool) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector:                 map[string]string{"app": "podinfo"},
			PublishNotReadyAddresses: publishNotReady,
			Ports:                    []corev1.ServicePort{{Name: "mtls", Port: 8443, TargetPort: intstr.FromInt32(8443)}},
		},
	}
}

// waitPodinfo waits for the pod of Deployment name to be Ready (or merely running when
// ready is false) and returns it.
func waitPodinfo(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, ready bool, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(ctx, t, timeout, fmt.Sprintf("%s ready", name), func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil || len(pods.Items) != 1 {
			return false
		}
		pod = &pods.Items[0]
		return podReady(pod) == ready
	})
	return pod
}

// endpointReady is "ready", "not ready" or "absent": pod's state in Service svc's
// EndpointSlices.
func endpointReady(ctx context.Context, cs kubernetes.Interface, svc, pod string) string {
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return "absent"
	}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Name == pod {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					return "ready"
				}
				return "not ready"
			}
		}
	}
	return "absent"
}
