package status

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	acmestatus "github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/webhook/inject"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func pod(name string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: ann},
		Spec:   corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.2.3"}}
}

func TestCollect(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}}
	cfg := inject.DefaultConfig()
	injected := pod("web", map[string]string{contract.Inbound: "8443:8080", contract.ExternalHosts: "shop.example.com",
		contract.Upstreams: "db.shop.svc:5432@9001", contract.AppCerts: "/etc/tls", contract.AppCertFormats: "pem,jks"})
	if _, err := inject.Mutate(injected, ns, cfg); err != nil {
		t.Fatal(err)
	}
	missing := pod("slipped", map[string]string{contract.Inbound: "8443:8080"})
	optedOut := pod("batch", map[string]string{contract.Inject: "false"})
	secretName := injected.Annotations[contract.ExternalSecret]
	ext := acmestatus.External{Hosts: []string{"shop.example.com"}, Serial: "0a", CertIssuer: "CN=Pebble Intermediate",
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour), RenewAt: now.Add(60 * 24 * time.Hour),
		LastError: "rate limited", Failures: 1}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: "shop", Annotations: ext.Encode(nil)}}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "shop"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "slipped", Namespace: "shop"},
		Reason:         "PodtlsNotInjected", Message: "recreate it", Type: "Warning", Count: 2, LastTimestamp: metav1.NewTime(now.Add(-time.Minute))}
	injected.Labels = map[string]string{"app": "web"}
	published := contract.DNSRecordState{State: contract.DNSRecordsPublished, Records: []string{"shop.example.com 300 A 192.0.2.7"}, Since: now.Add(-2 * time.Minute)}
	svcs := []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-public", Namespace: "shop",
			Annotations: map[string]string{contract.DNSRecords: "true", contract.DNSRecordsStatus: published.Encode()}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-new", Namespace: "shop", Annotations: map[string]string{contract.DNSRecords: "nodes"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-internal", Namespace: "shop"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "shop", Annotations: map[string]string{contract.DNSRecords: "true"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "other"}}},
	}
	kube := fake.NewClientset(append([]runtime.Object{ns, injected, missing, optedOut, sec, ev}, svcs...)...)

	mesh := &certs.CertInfo{Serial: "1f", NotAfter: now.Add(20 * time.Hour)}
	proxy := func(_ context.Context, ns, name, path string) ([]byte, error) {
		if ns != "shop" || name != "web" {
			t.Errorf("proxy to %s/%s", ns, name)
		}
		switch path {
		case "certs":
			return []byte(`{"ready":true,"mesh":{"serial":"1f","not_after":"` + mesh.NotAfter.Format(time.RFC3339) + `"}}`), nil
		case "plaintext":
			return []byte(`{"enabled":true,"pod_ips":["10.1.2.3"],"checked_at":"2026-11-24T11:59:00Z","ports":[` +
				`{"port":8080,"exposed":true,"addresses":["10.1.2.3:8080"],"fix":"bind the app to 127.0.0.1:8080"}]}`), nil
		case "app-certs":
			return []byte(`[{"source":"mesh","written":true,"serial":"1f","written_at":"2026-11-24T11:58:00Z","last_reload":"none"},` +
				`{"source":"external","written":true,"serial":"0a","error":"write external files: no space left on device"}]`), nil
		}
		t.Errorf("proxy to path %q", path)
		return nil, nil
	}
	rep, err := Collect(context.Background(), kube, Options{Namespace: "shop", ControllerNamespace: "podtls-system", Live: true, Proxy: proxy})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Pods) != 3 {
		t.Fatalf("%d pods", len(rep.Pods))
	}
	byName := map[string]Pod{}
	for _, p := range rep.Pods {
		byName[p.Name] = p
	}
	web := byName["web"]
	if !web.Injected || strings.Join(web.Reasons, ",") != "namespace-enabled" || web.Identity != "spiffe://cluster.local/ns/shop/sa/web" ||
		len(web.Upstreams) != 1 || web.External == nil || !web.External.Found || web.External.Status.LastError != "rate limited" ||
		web.Live == nil || web.Live.Mesh == nil || web.Live.Mesh.Serial != "1f" {
		t.Errorf("web: %+v", web)
	}
	slipped := byName["slipped"]
	if slipped.Injected || !slipped.Missing || len(slipped.Events) != 1 || slipped.Events[0].Count != 2 || slipped.Live != nil {
		t.Errorf("slipped: %+v", slipped)
	}
	batch := byName["batch"]
	if batch.Injected || batch.Missing || strings.Join(batch.Reasons, ",") != "pod-disabled" || batch.Identity != "" {
		t.Errorf("batch: %+v", batch)
	}

	var table, detail bytes.Buffer
	if err := rep.WriteTable(&table, now, false); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteDetail(&detail, now, output.Style{}); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{table.String(), detail.String()} {
		for _, l := range strings.Split(out, "\n") {
			if utf8.RuneCountInString(l) > output.Width {
				t.Errorf("line of %d columns: %q", utf8.RuneCountInString(l), l)
			}
		}
	}
	for _, want := range []string{"MISSING", "20h left", "pod-disabled", "shop/web: PLAINTEXT BYPASS: app port 8080", "bind the app to 127.0.0.1:8080"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	t.Logf("table:\n%s\ndetail:\n%s", table.String(), detail.String())
	for _, want := range []string{"issuer CN=Pebble Intermediate", "last error (1 failures): rate limited", "PodtlsNotInjected", "serial 1f",
		"Plaintext:", "10.1.2.3:8080", "bind the app to 127.0.0.1:8080",
		"App files:", "/etc/tls (mesh, external; pem, jks; reload none)", "mesh: serial 1f, written 2026-11-24T11:58:00Z",
		"external: [FAIL] write external files: no space left on device",
		"DNS (service/web-public): [ok] published since 2m ago:", "shop.example.com 300 A 192.0.2.7",
		"DNS (service/web-new): not published yet"} {
		if !strings.Contains(detail.String(), want) {
			t.Errorf("detail lacks %q:\n%s", want, detail.String())
		}
	}
}

// TestPlaintextLine: every state of the sidecar's plaintext check has its
// own line in the details, and only an exposed port has a bypass line.
func TestPlaintextLine(t *testing.T) {
	checked := now.Add(-time.Minute)
	for _, tc := range []struct {
		name  string
		proxy func(path string) ([]byte, error)
		want  string
	}{
		{"exposed", func(string) ([]byte, error) {
			return []byte(`{"enabled":true,"checked_at":"2026-11-24T11:59:00Z","ports":[{"port":8080,"exposed":true,"addresses":["10.1.2.3:8080"],"fix":"bind the app to 127.0.0.1:8080"}]}`), nil
		}, "PLAINTEXT BYPASS: app port 8080 is reachable without TLS at 10.1.2.3:8080; bind the app"},
		{"loopback only", func(string) ([]byte, error) {
			return []byte(`{"enabled":true,"checked_at":"` + checked.Format(time.RFC3339) + `","ports":[{"port":8080,"exposed":false}]}`), nil
		}, "app ports 8080 not reachable on the pod IP"},
		{"not checked yet", func(string) ([]byte, error) { return []byte(`{"enabled":true}`), nil }, "not checked yet"},
		{"disabled", func(string) ([]byte, error) {
			return []byte(`{"enabled":false,"reason":"turned off"}`), nil
		}, "not checked: turned off"},
		{"older sidecar", func(string) ([]byte, error) {
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods/proxy"}, "web")
		}, "an older version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}}
			web := pod("web", map[string]string{contract.Inbound: "8443:8080"})
			if _, err := inject.Mutate(web, ns, inject.DefaultConfig()); err != nil {
				t.Fatal(err)
			}
			proxy := func(_ context.Context, _, _, path string) ([]byte, error) {
				if path == "certs" {
					return []byte(`{"ready":true}`), nil
				}
				return tc.proxy(path)
			}
			rep, err := Collect(context.Background(), fake.NewClientset(ns, web), Options{Namespace: "shop", Pod: "web", Live: true, Proxy: proxy})
			if err != nil {
				t.Fatal(err)
			}
			var detail bytes.Buffer
			if err := rep.WriteDetail(&detail, now, output.Style{}); err != nil {
				t.Fatal(err)
			}
			flat := strings.Join(strings.Fields(detail.String()), " ")
			if !strings.Contains(flat, "Plaintext: ") || !strings.Contains(flat, tc.want) {
				t.Fatalf("details lack %q:\n%s", tc.want, detail.String())
			}
			if got := strings.Contains(flat, "BYPASS"); got != (tc.name == "exposed") {
				t.Fatalf("bypass line shown=%v:\n%s", got, detail.String())
			}
		})
	}
}

func TestIdentitySourceFromArgs(t *testing.T) {
	pod := func(args ...string) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: contract.ContainerName, Args: args}}}}
	}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{pod("--credential-bundle", "/var/run/podtls/certs/credentials.pem", "--discovery-url", "https://c:8443"), contract.IdentityPodCertificate},
		{pod("--cert-dir", "/var/run/podtls/certs", "--ca-url", "https://c:8443"), contract.IdentityAgent},
		{pod("--cert-dir", "/certs"), "files"},
	} {
		if got := IdentitySource(tc.pod); got != tc.want {
			t.Errorf("IdentitySource(%v) = %q, want %q", tc.pod.Spec.InitContainers[0].Args, got, tc.want)
		}
	}
}
