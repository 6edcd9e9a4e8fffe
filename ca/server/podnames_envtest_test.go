package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/services"
	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
)

// statefulPod is a pod as a StatefulSet creates it: spec.hostname is its
// name, spec.subdomain the StatefulSet's serviceName.
func statefulPod(ns, name, subdomain string, labels map[string]string) *corev1.Pod {
	p := testPod(ns, name, "web", labels)
	p.Spec.Hostname, p.Spec.Subdomain = name, subdomain
	return p
}

func headlessService(ns, name string, selector map[string]string) *corev1.Service {
	s := testService(ns, name, selector)
	s.Spec.ClusterIP = corev1.ClusterIPNone
	return s
}

// TestPodDNSNamesEnvtest: the CA grants a pod's own
// <hostname>.<subdomain>.<ns>.svc names by what a real API server says about
// the pod that holds the bound token, read through the controller's cache:
// the right pod gets them without asking; another pod of the namespace,
// another namespace's pod, and a pod whose subdomain names no headless
// Service selecting it get none and are refused when they ask.
func TestPodDNSNamesEnvtest(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	kube := env.Clientset
	web := map[string]string{"app": "web"}
	for _, n := range []string{"db", "prod"} {
		env.CreateNamespace(t, n, nil)
		env.CreateServiceAccount(t, n, "web")
	}
	for _, obj := range []*corev1.Service{
		headlessService("db", "web", web),
		testService("db", "api", map[string]string{"app": "api"}), // a ClusterIP Service
		headlessService("prod", "web", web),
	} {
		if _, err := kube.CoreV1().Services(obj.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*corev1.Pod{}
	for _, p := range []*corev1.Pod{
		statefulPod("db", "web-0", "web", web),
		statefulPod("db", "web-1", "web", web),
		statefulPod("prod", "web-0", "web", web),
		// Claims web-0's hostname and subdomain, but web does not select it.
		func() *corev1.Pod {
			p := statefulPod("db", "impostor", "web", map[string]string{"app": "other"})
			p.Spec.Hostname = "web-0"
			return p
		}(),
		statefulPod("db", "api-0", "api", map[string]string{"app": "api"}), // behind a ClusterIP Service
		statefulPod("db", "late-0", "late", map[string]string{"app": "late"}),
	} {
		got, err := kube.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods[p.Namespace+"/"+p.Name] = got
	}

	cached, err := crcache.New(env.Config, crcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Service{}} {
		if _, err := cached.GetInformer(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	api, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cacheCtx, stopCache := context.WithCancel(context.Background())
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- cached.Start(cacheCtx) }()
	t.Cleanup(func() {
		stopCache()
		if err := <-cacheDone; err != nil {
			t.Errorf("cache: %v", err)
		}
	})
	syncCtx, cancelSync := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSync()
	if !cached.WaitForCacheSync(syncCtx) {
		t.Fatal("cache did not sync in 30s")
	}
	mat, err := ca.LoadOrCreate(ctx, kube, ca.SecretOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(mat, ca.Config{Pods: &services.Lister{Cache: cached, API: api}})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Options{
		Authority:     authority,
		Authenticator: NewTokenReviewAuthenticator(kube.AuthenticationV1().TokenReviews(), TokenReviewOptions{}),
	})

	// sign asks the CA, with a token bound to pod ns/name, for dns.
	sign := func(t *testing.T, nsName string, dns ...string) (int, []string, string) {
		t.Helper()
		p := pods[nsName]
		token := env.Token(t, p.Namespace, "web", signapi.Audience, time.Hour, p)
		status, body := ts.do(t, http.MethodPost, token, signBody(t, newCSR(t, dns...), ""))
		if status != http.StatusOK {
			return status, nil, string(body)
		}
		var resp signapi.SignResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		return status, parseChain(t, resp.CertificateChain)[0].DNSNames, ""
	}
	web0 := []string{"web-0.web.db.svc", "web-0.web.db.svc.cluster.local"}
	for _, tc := range []struct {
		name   string
		pod    string
		ask    []string
		status int
		want   []string
	}{
		{"right pod gets its names without asking", "db/web-0", nil, http.StatusOK,
			[]string{"web.db.svc", "web.db.svc.cluster.local", "web-0.web.db.svc", "web-0.web.db.svc.cluster.local"}},
		{"right pod may ask for them", "db/web-0", web0, http.StatusOK,
			[]string{"web-0.web.db.svc", "web-0.web.db.svc.cluster.local", "web.db.svc", "web.db.svc.cluster.local"}},
		{"other pod of the namespace gets its own", "db/web-1", nil, http.StatusOK,
			[]string{"web.db.svc", "web.db.svc.cluster.local", "web-1.web.db.svc", "web-1.web.db.svc.cluster.local"}},
		{"other pod of the namespace cannot ask", "db/web-1", web0[:1], http.StatusForbidden, nil},
		{"other namespace cannot ask", "prod/web-0", web0[:1], http.StatusForbidden, nil},
		{"same hostname, not selected by the headless Service: no pod name", "db/impostor", nil, http.StatusOK, nil},
		{"same hostname, not selected by the headless Service: cannot ask", "db/impostor", web0, http.StatusForbidden, nil},
		{"subdomain names a ClusterIP Service: no pod name", "db/api-0", nil, http.StatusOK,
			[]string{"api.db.svc", "api.db.svc.cluster.local"}},
		{"subdomain names a ClusterIP Service: cannot ask", "db/api-0", []string{"api-0.api.db.svc"}, http.StatusForbidden, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, got, body := sign(t, tc.pod, tc.ask...)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if status == http.StatusOK && !slices.Equal(got, tc.want) {
				t.Errorf("DNS names %q, want %q", got, tc.want)
			}
		})
	}

	// The cache follows the cluster: the name appears once a headless Service
	// named like the subdomain selects the pod, and goes with the Service.
	t.Run("name follows the headless Service", func(t *testing.T) {
		want := []string{"late.db.svc", "late.db.svc.cluster.local", "late-0.late.db.svc", "late-0.late.db.svc.cluster.local"}
		if _, got, body := sign(t, "db/late-0"); len(got) != 0 {
			t.Fatalf("before the Service: DNS names %q (%s), want none", got, body)
		}
		svc, err := kube.CoreV1().Services("db").Create(ctx, headlessService("db", "late", map[string]string{"app": "late"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 15*time.Second, "the CA to grant late-0 its name", func() (bool, string) {
			_, got, body := sign(t, "db/late-0")
			return slices.Equal(got, want), "DNS names " + body + " " + join(got)
		})
		if err := kube.CoreV1().Services("db").Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 15*time.Second, "the CA to stop granting late-0 its name", func() (bool, string) {
			status, got, body := sign(t, "db/late-0", "late-0.late.db.svc")
			return status == http.StatusForbidden, "status " + http.StatusText(status) + " " + body + " " + join(got)
		})
	})
}

func join(s []string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
