package mesh

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/hack/ociimage/oci"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/gobuild"
)

const (
	nginxImage   = "localhost/podtls/nginx:e2e"
	publicHost   = "customer.demo.example.test"
	storePass    = "e2e-store-password-0123456789"
	recommendID  = "spiffe://cluster.local/ns/demo/sa/recommendation"
	appOwnedYAML = "manifests/examples/app-owned-tls.yaml"
)

// TestAppOwnedTLS runs seed 004 with the TLS in the apps (manifests/examples/app-owned-tls.yaml):
// customer serves its ACME certificate (Pebble, DNS-01 on BIND) itself and calls preference,
// which calls recommendation (Debian's nginx), each with mTLS from the files podtls writes
// into the pod; no podtls proxy is in the path. Then: keytool reads the JKS and PKCS#12
// stores from inside the pod; a mesh renewal reaches nginx through SIGHUP (new serial, no
// restart); a forced ACME renewal reaches customer's files, and rolls a podinfo Deployment
// that loads its certificate once (reload "restart") exactly once; bad annotations are
// refused at admission.
func TestAppOwnedTLS(t *testing.T) {
	cluster.Require(t, "app-owned TLS")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	images := buildImages(ctx, t, root)
	dir := t.TempDir()
	if err := gobuild.Binaries(ctx, filepath.Join(root, thirdPartyModule), dir, podinfoPkg); err != nil {
		t.Fatal(err)
	}
	podinfoTar, nginxTar := filepath.Join(dir, "podinfo.tar"), filepath.Join(dir, "nginx.tar")
	if err := cluster.PackImage(filepath.Join(dir, "podinfo"), podinfoImage, podinfoTar); err != nil {
		t.Fatal(err)
	}
	if err := packNginx(ctx, nginxTar); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Options{Images: append(images, podinfoTar, nginxTar), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	acme := startNodeACME(ctx, t, c, log)
	t.Cleanup(acme.Close) // before Down: BIND and Pebble run in the node's namespace
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, c)
		}
	})
	cs := c.Client
	installWithACME(ctx, t, cs, acme, map[string]any{
		"allow":   []any{map[string]any{"namespaces": []string{ns}, "hosts": []string{"*.demo.example.test"}}},
		"renewal": map[string]any{"minBackoff": "5s"},
	})
	waitAvailable(ctx, t, cs, 2*time.Minute)
	for _, args := range [][]string{{"create", "namespace", ns}, {"label", "namespace", ns, "podtls.io/inject=enabled"},
		{"-n", ns, "create", "secret", "generic", "store-pass", "--from-literal=password=" + storePass}} {
		if _, err := c.RunKubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	if _, err := c.RunKubectl(ctx, "apply", "-f", filepath.Join(root, appOwnedYAML)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"recommendation", "preference", "customer"} {
		waitDeployment(ctx, t, cs, d, 3*time.Minute)
	}
	t.Logf("three app-owned-TLS deployments available in %s", time.Since(t0).Round(time.Millisecond))
	secretName := contract.ExternalSecretName([]string{publicHost})
	pebbleRoots, err := acme.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The chain, public client -> customer -> preference -> recommendation, all TLS in apps.
	customerIP := podIP(ctx, t, cs, "customer")
	var body string
	waitFor(ctx, t, 3*time.Minute, "customer to serve its ACME certificate and reach recommendation", func() bool {
		body, err = publicGet(ctx, c, customerIP, pebbleRoots)
		return err == nil && strings.Contains(body, "recommendation (nginx) client-verified=SUCCESS")
	})
	t.Logf("public GET https://%s/ -> %s", publicHost, strings.TrimSpace(body))
	if !strings.Contains(body, "preference serial=") || !strings.Contains(body, "peer="+customerID) {
		t.Fatalf("preference did not see customer's identity: %s", body)
	}
	for _, p := range []string{"recommendation", "preference", "customer"} {
		pod := podByApp(ctx, t, cs, p)
		if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != sidecar || slices.Contains(pod.Spec.InitContainers[0].Args, "--inbound") {
			t.Fatalf("%s: want a sidecar without listeners, got %+v", p, pod.Spec.InitContainers)
		}
	}

	t.Run("preference refuses callers other than customer", func(t *testing.T) {
		addr := net.JoinHostPort(podIP(ctx, t, cs, "preference"), "8443")
		if _, err := tlsGet(ctx, c, addr, "preference.demo.svc", nil, nil); err == nil {
			t.Fatal("preference answered a client without a certificate")
		}
	})

	t.Run("keytool and openssl read the stores inside the pod", func(t *testing.T) {
		keytoolStores(ctx, t, c)
	})

	t.Run("a mesh renewal reaches nginx by SIGHUP, without a restart", func(t *testing.T) {
		recIP := podIP(ctx, t, cs, "recommendation")
		before := servedSerial(ctx, t, c, net.JoinHostPort(recIP, "8443"), "recommendation.demo.svc")
		start := time.Now()
		if out, err := c.RunKubectl(ctx, "-n", ns, "exec", "deploy/recommendation", "-c", sidecar, "--", "/podtls-sidecar", "renew"); err != nil {
			t.Fatalf("renew: %v\n%s", err, out)
		}
		var after string
		waitFor(ctx, t, time.Minute, "nginx to serve the renewed certificate", func() bool {
			after = servedSerial(ctx, t, c, net.JoinHostPort(recIP, "8443"), "recommendation.demo.svc")
			return after != before
		})
		t.Logf("mesh renewal -> files -> SIGHUP -> nginx serves serial %s (was %s) in %s", after, before, time.Since(start).Round(time.Millisecond))
		pod := podByApp(ctx, t, cs, "recommendation")
		for _, st := range pod.Status.ContainerStatuses {
			if st.RestartCount != 0 {
				t.Fatalf("container %s restarted %d times: the signal must reload, not kill", st.Name, st.RestartCount)
			}
		}
		if !strings.Contains(logsOf(ctx, cs, pod.Name, sidecar), `"app told to reload its certificates"`) {
			t.Fatal("the sidecar did not log the reload")
		}
		// The sidecar cannot write Events itself: the controller records its report.
		waitFor(ctx, t, time.Minute, "Event PodtlsAppReloaded on the pod", func() bool {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=PodtlsAppReloaded,involvedObject.name=" + pod.Name})
			return err == nil && len(evs.Items) > 0
		})
		waitFor(ctx, t, time.Minute, "the chain to work with the renewed certificate", func() bool {
			b, err := publicGet(ctx, c, customerIP, pebbleRoots)
			return err == nil && strings.Contains(b, "client-verified=SUCCESS")
		})
	})

	t.Run("a forced ACME renewal reaches customer's files and rolls podinfo once", func(t *testing.T) {
		// podinfo loads its HTTPS certificate once: reload "restart". Created after the
		// certificate was issued, it is not restarted for it.
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, podinfoTLS(), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitDeployment(ctx, t, cs, "podinfo-tls", 3*time.Minute)
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "podinfo-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if v := d.Spec.Template.Annotations[contract.RestartedFor]; v != "" || d.Generation != 1 {
			t.Fatalf("podinfo-tls restarted although its pods have the current certificate: %q, generation %d", v, d.Generation)
		}
		podinfoIP := podIP(ctx, t, cs, "podinfo-tls")
		oldSerial := servedSerial(ctx, t, c, net.JoinHostPort(podinfoIP, "9443"), publicHost)

		start := time.Now()
		if _, err := c.RunKubectl(ctx, "-n", ns, "annotate", "secret", secretName, status.ForceRenew+"="+time.Now().Format(time.RFC3339), "--overwrite"); err != nil {
			t.Fatal(err)
		}
		var newSerial string
		waitFor(ctx, t, 3*time.Minute, "customer to serve the renewed ACME certificate", func() bool {
			s := servedSerial(ctx, t, c, net.JoinHostPort(customerIP, "8443"), publicHost)
			newSerial = s
			return s != "" && s != oldSerial
		})
		t.Logf("forced ACME renewal -> customer serves serial %s (was %s) in %s", newSerial, oldSerial, time.Since(start).Round(time.Millisecond))

		waitFor(ctx, t, 3*time.Minute, "podinfo-tls rolled and serving the new certificate", func() bool {
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, "podinfo-tls", metav1.GetOptions{})
			if err != nil || d.Spec.Template.Annotations[contract.RestartedFor] == "" || d.Status.UpdatedReplicas != 1 || d.Status.AvailableReplicas != 1 || d.Status.Replicas != 1 {
				return false
			}
			ip := podIP(ctx, t, cs, "podinfo-tls")
			return servedSerial(ctx, t, c, net.JoinHostPort(ip, "9443"), publicHost) == newSerial
		})
		t.Logf("podinfo-tls rolled and serves %s, %s after the renewal", newSerial, time.Since(start).Round(time.Millisecond))
		// Exactly one rollout: one template change, one Event; a later pass adds none.
		// The Secret touched wakes the restart controller: its reconcile counter growing
		// proves the pass ran before the checks below.
		waitFor(ctx, t, time.Minute, "the restart Event", func() bool { return restartEvents(ctx, cs) >= 1 })
		passes := controllerReconciles(ctx, t, c, cs, "app-restarts")
		if out, err := c.RunKubectl(ctx, "-n", ns, "exec", "deploy/podinfo-tls", "-c", sidecar, "--", "/podtls-sidecar", "renew"); err != nil {
			t.Fatalf("renew: %v\n%s", err, out)
		}
		if _, err := c.RunKubectl(ctx, "-n", ns, "annotate", "secret", secretName, "e2e/touched="+time.Now().Format(time.RFC3339Nano), "--overwrite"); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, time.Minute, "a restart-controller pass after the Secret was touched", func() bool {
			return controllerReconciles(ctx, t, c, cs, "app-restarts") > passes
		})
		d, err = cs.AppsV1().Deployments(ns).Get(ctx, "podinfo-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Generation != 2 || restartEvents(ctx, cs) != 1 {
			t.Fatalf("podinfo-tls: generation %d, %d restart Events; want one rollout", d.Generation, restartEvents(ctx, cs))
		}
	})

	t.Run("files from the kubelet's pod certificate", func(t *testing.T) {
		labels := map[string]string{"app": "pc-files"}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "pc-files"}, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					contract.Identity: contract.IdentityPodCertificate, contract.AppCerts: "/etc/tls", contract.AppCertFormats: "pem,jks"}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](2000)},
					Containers: []corev1.Container{{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever,
						Args: []string{"serve", "-addr", "127.0.0.1:8080"}}},
				}}}}
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitDeployment(ctx, t, cs, "pc-files", 3*time.Minute)
		pod := podByApp(ctx, t, cs, "pc-files")
		if !slices.Contains(pod.Spec.InitContainers[0].Args, "--credential-bundle") {
			t.Fatalf("not a podCertificate pod: %v", pod.Spec.InitContainers[0].Args)
		}
		// The app (user 2000, fsGroup set by the webhook) reads the key and the store.
		for _, f := range []string{"tls.key", "keystore.jks", "store.password"} {
			if _, err := c.RunKubectl(ctx, "-n", ns, "exec", pod.Name, "-c", "app", "--", "/echo", "cat", "/etc/tls/mesh/"+f); err != nil {
				t.Fatalf("the app cannot read %s: %v", f, err)
			}
		}
		out, err := c.RunKubectl(ctx, "-n", ns, "exec", pod.Name, "-c", "app", "--", "/echo", "cat", "/etc/tls/mesh/tls.crt")
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(out)
		if blk == nil {
			t.Fatalf("tls.crt: %q", out)
		}
		leaf, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if want := "spiffe://cluster.local/ns/demo/sa/default"; len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
			t.Fatalf("delivered identity %v, want %s", leaf.URIs, want)
		}
		t.Logf("kubelet-issued leaf %s (%s) delivered to the app", leaf.SerialNumber.Text(16), leaf.URIs[0])
	})

	t.Run("a root rotation's new root reaches the trust stores", func(t *testing.T) {
		cli, err := gobuild.Binary(ctx, root, t.TempDir(), "./cli/cmd/podtls")
		if err != nil {
			t.Fatal(err)
		}
		roots := func() int {
			out, err := c.RunKubectl(ctx, "-n", ns, "exec", "deploy/preference", "-c", "app", "--", "/echo", "cat", "/etc/tls/mesh/ca.crt")
			if err != nil {
				return -1
			}
			return strings.Count(string(out), "BEGIN CERTIFICATE")
		}
		if n := roots(); n != 1 {
			t.Fatalf("ca.crt holds %d roots before the rotation", n)
		}
		recIP := podIP(ctx, t, cs, "recommendation")
		admin := adminClient(c)
		reloads := func() float64 {
			m, err := metricsOf(ctx, admin, recIP)
			if err != nil {
				return -1
			}
			return m[`podtls_sidecar_app_reloads_total{action="signal",result="success"}`]
		}
		before := reloads()
		start := time.Now()
		if out, err := c.Exec(ctx, cli, "--kubeconfig", c.Kubeconfig, "--controller-namespace", systemNS, "ca", "rotate", "publish"); err != nil {
			t.Fatalf("podtls ca rotate publish: %v\n%s", err, out)
		}
		waitFor(ctx, t, 4*time.Minute, "preference's ca.crt with the old and the new root", func() bool { return roots() == 2 })
		t.Logf("rotation publish -> both roots in the app's ca.crt in %s", time.Since(start).Round(time.Second))
		dir := t.TempDir()
		out, err := c.RunKubectl(ctx, "-n", ns, "exec", "deploy/preference", "-c", "app", "--", "/echo", "cat", "/etc/tls/mesh/truststore.jks")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "truststore.jks"), out, 0o600); err != nil {
			t.Fatal(err)
		}
		kt, err := exec.CommandContext(ctx, "keytool", "-list", "-storetype", "JKS", "-keystore", filepath.Join(dir, "truststore.jks"), "-storepass", storePass).CombinedOutput()
		if err != nil || !strings.Contains(string(kt), "Your keystore contains 2 entries") {
			t.Fatalf("truststore.jks during the rotation: %v\n%s", err, kt)
		}
		waitFor(ctx, t, 2*time.Minute, "nginx told about the new root", func() bool { return reloads() > before })
		waitFor(ctx, t, time.Minute, "the chain to work during the rotation", func() bool {
			b, err := publicGet(ctx, c, customerIP, pebbleRoots)
			return err == nil && strings.Contains(b, "client-verified=SUCCESS")
		})
	})

	t.Run("bad app-cert annotations are refused at admission", func(t *testing.T) {
		for _, tc := range []struct{ ann, want string }{
			{"podtls.io/app-certs: /etc/tls\n    podtls.io/app-cert-formats: der", `format "der" is unknown`},
			{"podtls.io/app-certs: /etc/tls\n    podtls.io/app-cert-formats: jks\n    podtls.io/app-cert-password: nobody-made-this", "Secret demo/nobody-made-this does not exist"},
			{"podtls.io/app-certs: /etc/tls\n    podtls.io/app-cert-reload: restart", "each renewal would roll the workload"},
			{"podtls.io/app-certs: /srv", `"/srv" overlaps the mount of volume "data" at "/srv/data"`},
		} {
			manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: bad
  namespace: demo
  annotations:
    %s
spec:
  containers: [{name: app, image: %s, imagePullPolicy: Never, volumeMounts: [{name: data, mountPath: /srv/data}]}]
  volumes: [{name: data, emptyDir: {}}]
`, tc.ann, echoImage)
			f := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := c.RunKubectl(ctx, "apply", "--dry-run=server", "-f", f)
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("%s: %v\n%s", tc.ann, err, out)
			}
		}
	})
}

// installWithACME installs podtls with an ACME issuer on the node's Pebble and BIND
// (rfc2136, its DNS-01 key in the chart-made credentials Secret), config merged over
// that, and waits for the controller.
func installWithACME(ctx context.Context, t *testing.T, cs kubernetes.Interface, acme *acmetest.Env, config map[string]any) {
	t.Helper()
	cfg, creds := acme.RFC2136Config()
	in := Install{ControllerImage: controllerImage, SidecarImage: sidecarImage, PullPolicy: corev1.PullNever, Replicas: 1,
		ACME: mergeValues(map[string]any{
			"directoryURL": acme.DirectoryURL, "email": "e2e@example.test", "profile": "default",
			"caBundle": string(acme.ACMECABundle()),
			"dns": map[string]any{
				"provider": "rfc2136", "credentialsSecretRef": map[string]any{"name": "podtls-dns-credentials"},
				"config": cfg, "recursiveNameservers": []string{acme.DNSAddr},
				"authoritativeNSCheck": false, "propagationTimeout": "30s", "pollingInterval": "500ms",
			},
		}, config),
		ACMECredentials: creds,
	}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, cs, 2*time.Minute)
}

// startNodeACME starts BIND9 and Pebble inside the node's network namespace (as the demo
// does), or skips when their assets are missing and nothing requires them.
func startNodeACME(ctx context.Context, t *testing.T, c *cluster.Cluster, log *slog.Logger) *acmetest.Env {
	t.Helper()
	netns := "podtls-e2e-" + c.ID
	env, err := acmetest.Start(ctx, acmetest.Options{
		ListenIP: cluster.NodeIP, Zone: "example.test.",
		Command: func(ctx context.Context, name string, args ...string) *exec.Cmd {
			return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns, name}, args...)...)
		},
		DialContext: c.DialContext, Logger: log,
	})
	if errors.Is(err, acmetest.ErrAssetsMissing) && os.Getenv("PODTLS_REQUIRE_ACME") == "" {
		t.Skipf("BIND9 and Pebble are missing (make acme-assets): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// packNginx packs Debian's nginx with the shared libraries ldd lists into an image.
func packNginx(ctx context.Context, out string) error {
	const bin = "/usr/sbin/nginx"
	ldd, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return fmt.Errorf("ldd %s (apt-get install nginx): %w", bin, err)
	}
	files := []oci.File{{Source: bin, Path: bin, Mode: 0o755}}
	sc := bufio.NewScanner(strings.NewReader(string(ldd)))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				files = append(files, oci.File{Source: f, Path: f, Mode: 0o755})
			}
		}
	}
	_, err = oci.WriteFile(out, oci.Spec{Name: nginxImage, Files: files, Entrypoint: []string{bin}})
	return err
}

// podinfoTLS is podinfo serving HTTPS on 9443 with customer's external certificate,
// loaded once at start: the controller restarts it when the certificate changes.
func podinfoTLS() *appsv1.Deployment {
	labels := map[string]string{"app": "podinfo-tls"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo-tls"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					contract.ExternalHosts: publicHost, contract.AppCerts: "/etc/tls",
					contract.AppCertSources: "external", contract.AppCertReload: "restart",
				}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000), FSGroup: ptr.To[int64](1000)},
					Containers: []corev1.Container{{
						Name: "podinfo", Image: podinfoImage, ImagePullPolicy: corev1.PullNever,
						Command: []string{"/podinfo", "--port", "9898", "--secure-port", "9443", "--cert-path", "/etc/tls/external", "--level", "info"},
						Ports:   []corev1.ContainerPort{{Name: "https", ContainerPort: 9443}},
					}},
				},
			},
		},
	}
}

func waitDeployment(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, timeout time.Duration) {
	t.Helper()
	waitFor(ctx, t, timeout, "deployment "+name+" available", func() bool {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 1 && d.Status.UpdatedReplicas == 1 && d.Status.Replicas == 1
	})
}

func podByApp(ctx context.Context, t *testing.T, cs kubernetes.Interface, app string) *corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			return p
		}
	}
	t.Fatalf("no running pod of %s", app)
	return nil
}

func podIP(ctx context.Context, t *testing.T, cs kubernetes.Interface, app string) string {
	t.Helper()
	return podByApp(ctx, t, cs, app).Status.PodIP
}

// tlsGet GETs https://serverName/ at addr, verifying the server against roots (nil:
// not verified) and presenting cert when given.
func tlsGet(ctx context.Context, c *cluster.Cluster, addr, serverName string, roots *x509.CertPool, cert *tls.Certificate) (string, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots, MinVersion: tls.VersionTLS12, InsecureSkipVerify: roots == nil}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return c.DialContext(ctx, "tcp", addr) },
		TLSClientConfig: cfg, DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+serverName+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

// publicGet calls customer's public name at its pod IP, verifying Pebble's chain.
func publicGet(ctx context.Context, c *cluster.Cluster, ip string, pebbleRoots []byte) (string, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pebbleRoots)
	return tlsGet(ctx, c, net.JoinHostPort(ip, "8443"), publicHost, pool, nil)
}

// servedSerial is the serial (hex) of the leaf served at addr for serverName, "" when
// nothing was served.
func servedSerial(ctx context.Context, t *testing.T, c *cluster.Cluster, addr, serverName string) string {
	t.Helper()
	raw, err := c.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ""
	}
	defer raw.Close()
	var serial string
	conn := tls.Client(raw, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				serial = cs.PeerCertificates[0].SerialNumber.Text(16)
			}
			return nil
		}})
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = conn.HandshakeContext(hctx) // an mTLS server refuses us after sending its chain
	return serial
}

func restartEvents(ctx context.Context, cs kubernetes.Interface) int {
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=PodtlsRestarted,involvedObject.name=podinfo-tls"})
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range evs.Items {
		n += int(max(e.Count, 1))
	}
	return n
}

// keytoolStores copies preference's stores out of its app container (the app's own view:
// its user reads them through the pod's fsGroup) and has keytool and openssl read them
// with the Secret's password.
func keytoolStores(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"keystore.jks", "truststore.jks", "keystore.p12", "truststore.p12"} {
		out, err := c.RunKubectl(ctx, "-n", ns, "exec", "deploy/preference", "-c", "app", "--", "/echo", "cat", "/etc/tls/mesh/"+f)
		if err != nil {
			t.Fatalf("read %s in the app container: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []struct{ file, typ, want string }{
		{"keystore.jks", "JKS", "Entry type: PrivateKeyEntry"}, {"keystore.p12", "PKCS12", "Entry type: PrivateKeyEntry"},
		{"truststore.jks", "JKS", "trustedCertEntry"}, {"truststore.p12", "PKCS12", "trustedCertEntry"},
	} {
		out, err := exec.CommandContext(ctx, "keytool", "-list", "-v", "-storetype", s.typ, "-keystore", filepath.Join(dir, s.file), "-storepass", storePass).CombinedOutput()
		if err != nil || !strings.Contains(string(out), s.want) {
			t.Fatalf("keytool %s: %v\n%s", s.file, err, out)
		}
		if strings.HasPrefix(s.file, "keystore") && !strings.Contains(string(out), prefID) {
			t.Fatalf("keytool %s: no %s in the chain:\n%s", s.file, prefID, out)
		}
	}
	out, err := exec.CommandContext(ctx, "openssl", "pkcs12", "-in", filepath.Join(dir, "keystore.p12"), "-passin", "pass:"+storePass, "-info", "-noout").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "AES-256-CBC") {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
}
