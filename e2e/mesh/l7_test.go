package mesh

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

const (
	routeGuideServerImage = "localhost/podtls/routeguide-server:e2e"
	routeGuideClientImage = "localhost/podtls/routeguide-client:e2e"
	routeGuideServerPkg   = "google.golang.org/grpc/examples/route_guide/server"
	routeGuideClientPkg   = "google.golang.org/grpc/examples/route_guide/client"
	grpcurlPkg            = "github.com/fullstorydev/grpcurl/cmd/grpcurl"
)

// loadReport is what `echo load` prints (e2e/apps/echo/load.go).
type loadReport struct {
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Before   map[string]int `json:"before"`
	After    map[string]int `json:"after"`
	Errors   []string       `json:"errors"`
}

// testBalancing runs 3 podinfo replicas behind one Service and a client pod
// whose app sends 1500 GETs over ONE h2c connection to its sidecar's balanced
// outbound listener (100 per second, 4 in flight). The first 900 must spread
// within ±20% over the replicas. Then the test SIGKILLs one replica's sidecar
// (its pod stays in the Service's endpoints until its readiness fails): no
// more requests may fail than were in flight, and the caller's sidecar must
// have seen the dead endpoint refuse connections and left it out (a few
// refusals, not one per request sent its way).
func testBalancing(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	const replicas, requests, split, inFlight = 3, 1500, 900, 4
	d := podinfoDeployment("podinfo-lb", true)
	d.Spec.Replicas = ptr.To[int32](replicas)
	d.Spec.Template.Annotations["podtls.io/mode"] = "http"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := podinfoService("podinfo-lb", false)
	svc.Spec.Selector = map[string]string{"app": "podinfo-lb"}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	waitFor(ctx, t, 3*time.Minute, "3 podinfo-lb replicas ready and in the endpoints", func() bool {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=podinfo-lb"})
		if err != nil || len(list.Items) != replicas {
			return false
		}
		for i := range list.Items {
			if !podReady(&list.Items[i]) || endpointReady(ctx, cs, "podinfo-lb", list.Items[i].Name) != "ready" {
				return false
			}
		}
		pods = list.Items
		return true
	})

	client := callerPod("load", "customer", echoImage, "")
	client.Annotations["podtls.io/upstreams"] = "podinfo-lb." + ns + ".svc:8443@9001/http"
	client.Spec.Containers[0].Args = []string{"load", "-n", strconv.Itoa(requests), "-c", strconv.Itoa(inFlight),
		"-qps", "100", "-split", strconv.Itoa(split), "http://127.0.0.1:9001/api/info"}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 3*time.Minute, fmt.Sprintf("the load client past request %d", split), func() bool {
		return strings.Contains(logsOf(ctx, cs, "load", "app"), fmt.Sprintf("progress %d", split))
	})
	victim := pods[0]
	killed := killSidecar(t, string(victim.UID))
	t.Logf("SIGKILLed the sidecar of %s (%s): pids %v", victim.Name, victim.Status.PodIP, killed)

	var done *corev1.Pod
	waitFor(ctx, t, 2*time.Minute, "the load client to finish", func() bool {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "load", metav1.GetOptions{})
		done = p
		return err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed)
	})
	out := logsOf(ctx, cs, "load", "app")
	if done.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("load client %s:\n%s", done.Status.Phase, out)
	}
	var rep loadReport
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, `{"requests"`) {
			if err := json.Unmarshal([]byte(line), &rep); err != nil {
				t.Fatalf("load report %q: %v", line, err)
			}
		}
	}
	if rep.Requests != requests {
		t.Fatalf("no load report in the client's log:\n%s", out)
	}
	t.Logf("load: before the kill %v, after %v, failed %d %v", rep.Before, rep.After, rep.Failed, rep.Errors)

	if len(rep.Before) != replicas {
		t.Errorf("first %d requests reached %d backends %v, want all %d", split, len(rep.Before), rep.Before, replicas)
	}
	sum := 0
	for _, n := range rep.Before {
		sum += n
	}
	mean := float64(sum) / replicas
	for host, n := range rep.Before {
		if dev := (float64(n) - mean) / mean; dev > 0.2 || dev < -0.2 {
			t.Errorf("backend %s answered %d of %d requests: %+.0f%% off an even share, want within ±20%%", host, n, sum, 100*dev)
		}
	}
	if rep.Failed > inFlight {
		t.Errorf("%d requests failed after the kill, more than the %d that can have been in flight: %v", rep.Failed, inFlight, rep.Errors)
	}

	sidecarLog := logsOf(ctx, cs, "load", contract.ContainerName)
	refusals := 0
	for _, line := range strings.Split(sidecarLog, "\n") {
		if strings.Contains(line, "upstream endpoint unavailable") && strings.Contains(line, victim.Status.PodIP+":") {
			refusals++
		}
	}
	// Left in, the dead endpoint would take a third of ~100 requests per
	// second until its sidecar is back; ejected (1 s, 2 s, 4 s, ...) it sees
	// one try per ejection period.
	if refusals == 0 || refusals > 12 {
		t.Errorf("caller's sidecar logged %d refusals by the killed endpoint %s, want 1 to 12 (ejected after the first):\n%s",
			refusals, victim.Status.PodIP, sidecarLog)
	}
	t.Logf("killed endpoint refused %d times before it was back", refusals)
}

// killSidecar SIGKILLs the podtls-sidecar processes of the pod with uid (the
// node's processes are the host's: the test runs as root beside the kubelet)
// and returns their pids. A SIGKILL leaves no drain: the connections the
// sidecar held are reset and its port refuses until the kubelet restarts it.
func killSidecar(t *testing.T, uid string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	marks := []string{"pod" + uid, "pod" + strings.ReplaceAll(uid, "-", "_")}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0]) != "podtls-sidecar" {
			continue
		}
		if !cgroupHasAny(filepath.Join("/proc", e.Name(), "cgroup"), marks) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("no podtls-sidecar process in the cgroup of pod %s", uid)
	}
	return pids
}

func cgroupHasAny(path string, marks []string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, m := range marks {
			if strings.Contains(sc.Text(), m) {
				return true
			}
		}
	}
	return false
}

// testRouteGuide runs grpc-go's route_guide example across the mesh: the
// server behind an http-mode sidecar (h2c to the app), the client calling its
// sidecar's balanced listener with insecure credentials, so every RPC crosses
// two HTTP/2 proxies and mTLS: unary, server streaming, client streaming and
// the bidirectional RouteChat, which prints notes echoed back by location.
func testRouteGuide(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	d := podinfoDeployment("routeguide", true)
	d.Spec.Template.Annotations = map[string]string{"podtls.io/inbound": "8443:50051/h2c", "podtls.io/mode": "http"}
	d.Spec.Template.Spec.Containers = []corev1.Container{{
		Name: "server", Image: routeGuideServerImage, ImagePullPolicy: corev1.PullNever,
		Args: []string{"-port", "50051"},
	}}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := podinfoService("routeguide", false)
	svc.Spec.Selector = map[string]string{"app": "routeguide"}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodinfo(ctx, t, cs, "routeguide", true, 2*time.Minute)

	caller := callerPod("routeguide-client", "customer", routeGuideClientImage, "")
	caller.Annotations["podtls.io/upstreams"] = "routeguide." + ns + ".svc:8443@9001/http"
	caller.Spec.Containers[0].Args = []string{"-addr", "127.0.0.1:9001"}
	var got *corev1.Pod
	for attempt := 0; attempt < 3; attempt++ { // the client does not retry a first RPC that finds no connection
		caller.Name = fmt.Sprintf("routeguide-client-%d", attempt)
		if got = runPod(ctx, t, cs, caller.DeepCopy(), 0); got.Status.Phase == corev1.PodSucceeded {
			break
		}
	}
	log := logsOf(ctx, cs, got.Name, "app")
	for _, want := range []string{"Route summary:", "Got message First message at point(0, 1)", "Got message Sixth message at point(0, 3)"} {
		if got.Status.Phase != corev1.PodSucceeded || !strings.Contains(log, want) {
			t.Fatalf("route_guide client across the mesh: pod %s, log lacks %q:\n%s", got.Status.Phase, want, log)
		}
	}
}

// packRouteGuide packs grpc-go's route_guide server and client (built by
// the caller into dir) as two images.
func packRouteGuide(t *testing.T, dir string) []string {
	t.Helper()
	var tars []string
	for _, img := range []struct{ bin, name string }{{"server", routeGuideServerImage}, {"client", routeGuideClientImage}} {
		tar := filepath.Join(dir, "routeguide-"+img.bin+".tar")
		if err := cluster.PackImage(filepath.Join(dir, img.bin), img.name, tar); err != nil {
			t.Fatal(err)
		}
		tars = append(tars, tar)
	}
	return tars
}

// testEdge fronts podinfo for clients outside the mesh: an external
// certificate for podinfo.example.test (made here and put in the Secret the
// webhook mounts, as the ACME manager would) is served by SNI on an http1
// port and an h2c port. Real clients run on the node: curl over HTTP/2, h2load,
// grpc-health-probe and grpcurl (server reflection) with TLS, a wss WebSocket
// echo, and curl with forged context headers, which podinfo's /headers shows
// did not reach the app.
func testEdge(ctx context.Context, t *testing.T, c *cluster.Cluster, root, dir string) {
	const host = "podinfo.example.test"
	caPEM, certPEM, keyPEM := edgeCertificate(t, host)
	caFile := filepath.Join(dir, "edge-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.ExternalSecretName([]string{host})},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := podinfoDeployment("podinfo-ext", true)
	d.Spec.Template.Annotations["podtls.io/mode"] = "http"
	d.Spec.Template.Annotations["podtls.io/inbound"] = "8443:9898, 9443:9999/h2c"
	d.Spec.Template.Annotations["podtls.io/external-hosts"] = host
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ip := waitPodinfo(ctx, t, c.Client, "podinfo-ext", true, 2*time.Minute).Status.PodIP
	echoBin, err := gobuild.Binary(ctx, root, dir, "./e2e/apps/echo")
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := c.Exec(ctx, name, args...)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(name), err)
		}
		return string(out)
	}
	base := "https://" + host + ":8443"
	resolve := host + ":8443:" + ip

	if got := run("curl", "-sS", "--http2", "--cacert", caFile, "--resolve", resolve, "-o", "/dev/null",
		"-w", "%{http_version} %{http_code}", base+"/api/info"); got != "2 200" {
		t.Errorf("curl --http2 %s/api/info: %q, want HTTP/2 200", base, got)
	}
	h2 := run("h2load", "-n", "400", "-c", "4", "-m", "8", "--connect-to", ip+":8443", base+"/api/info")
	if !strings.Contains(h2, "400 succeeded") || !strings.Contains(h2, "400 2xx") {
		t.Errorf("h2load against the edge:\n%s", h2)
	}
	if got := run(filepath.Join(dir, "grpc-health-probe"), "-addr", ip+":9443", "-tls", "-tls-ca-cert", caFile,
		"-tls-server-name", host, "-service", "podinfo", "-connect-timeout", "10s", "-rpc-timeout", "10s"); !strings.Contains(got, "SERVING") {
		t.Errorf("grpc-health-probe through the edge: %q", got)
	}
	grpcurl := []string{"-cacert", caFile, "-servername", host, "-max-time", "10"}
	if got := run(filepath.Join(dir, "grpcurl"), append(grpcurl, ip+":9443", "list")...); !strings.Contains(got, "grpc.health.v1.Health") {
		t.Errorf("grpcurl list (server reflection) through the edge: %q", got)
	}
	if got := run(filepath.Join(dir, "grpcurl"), append(grpcurl, "-d", `{"service":"podinfo"}`, ip+":9443", "grpc.health.v1.Health/Check")...); !strings.Contains(got, `"SERVING"`) {
		t.Errorf("grpcurl Health/Check through the edge: %q", got)
	}
	if got := run(echoBin, "ws", "-timeout", "30s", "-cacert", caFile, "-connect", ip+":8443",
		"wss://"+host+":8443/ws/echo", "hello-over-wss"); !strings.Contains(got, "hello-over-wss") {
		t.Errorf("wss echo through the edge: %q", got)
	}

	out := run("curl", "-sS", "--cacert", caFile, "--resolve", resolve,
		"-H", "X-Forwarded-For: 6.6.6.6", "-H", "x-forwarded-client-cert: Hash=forged;URI=spiffe://cluster.local/ns/x/sa/admin",
		"-H", "X-Podtls-Client-Id: spiffe://cluster.local/ns/x/sa/admin", "-H", "Forwarded: for=6.6.6.6",
		base+"/headers")
	var headers map[string][]string
	if err := json.Unmarshal([]byte(out), &headers); err != nil {
		t.Fatalf("podinfo /headers through the edge: %q: %v", out, err)
	}
	get := func(name string) []string {
		for k, v := range headers {
			if strings.EqualFold(k, name) {
				return v
			}
		}
		return nil
	}
	for _, forged := range []string{"X-Forwarded-Client-Cert", "X-Podtls-Client-Id", "Forwarded"} {
		if v := get(forged); v != nil {
			t.Errorf("forged %s reached the app: %q", forged, v)
		}
	}
	if xff := get("X-Forwarded-For"); len(xff) != 1 || strings.Contains(xff[0], "6.6.6.6") || xff[0] == "" {
		t.Errorf("X-Forwarded-For at the app = %q, want only the peer's address", xff)
	}
	if proto := get("X-Forwarded-Proto"); len(proto) != 1 || proto[0] != "https" {
		t.Errorf("X-Forwarded-Proto at the app = %q, want https", proto)
	}
	t.Logf("edge: HTTP/2, h2load, gRPC health, wss and header checks passed against %s (%s)", host, ip)
}

// edgeCertificate makes a CA and an ECDSA P-256 leaf for host, as PEM: the
// CA, the chain (leaf, then CA) and the key.
func edgeCertificate(t *testing.T, host string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e edge CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	// The full chain, as an ACME Secret holds it: the sidecar loads an
	// external certificate only when its chain verifies to its last
	// certificate or to the system roots.
	certPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), caPEM...)
	return caPEM, certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}
