package kubetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/internal/gobuild"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
)

const (
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
)

const (
	webhookLabel = "kubetest.podtls.io/webhook"
	mutatedKey   = "kubetest.podtls.io/mutated"
	webhookPath  = "/mutate-pod"
)

// podWebhook intercepts pod creation in namespaces labelled webhookLabel=on; envtest points
// its service reference at the local webhook server.
func podWebhook() *admissionregistrationv1.MutatingWebhookConfiguration {
	path := webhookPath
	sideEffects := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "kubetest"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.kubetest.podtls.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: "unused", Name: "unused", Path: &path}},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{webhookLabel: "on"}},
			SideEffects:             &sideEffects,
			FailurePolicy:           &fail,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

// annotate marks every pod it sees.
func annotate(_ context.Context, req admission.Request) admission.Response {
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[mutatedKey] = "true"
	raw, err := json.Marshal(&pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}

func newPod(ns, name, serviceAccount string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "app", Image: "localhost/podtls/test:dev"}},
		},
	}
}

// TestControlPlane exercises one control plane through every helper, because each start costs
// seconds: namespaces with their default ServiceAccount, ServiceAccount admission, bound
// tokens and TokenReview, a local mutating webhook, and the real kubectl.
func TestControlPlane(t *testing.T) {
	mwc := podWebhook()
	env := kubetest.Start(t, kubetest.WithMutatingWebhooks(mwc))
	if cc := mwc.Webhooks[0].ClientConfig; cc.Service == nil || cc.URL != nil {
		t.Errorf("Start modified the caller's webhook configuration: %+v", cc)
	}
	env.ServeWebhooks(t, map[string]http.Handler{webhookPath: &webhook.Admission{Handler: admission.HandlerFunc(annotate)}})
	ctx := t.Context()
	const ns = "kubetest"
	env.CreateNamespace(t, ns, map[string]string{"podtls.io/inject": "enabled"})
	env.CreateServiceAccount(t, ns, "app")

	pod := newPod(ns, "app-0", "app")
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatalf("create pod: %v", err)
	}

	t.Run("service account admission defaults the pod", func(t *testing.T) {
		p := newPod(ns, "defaulted", "")
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatalf("create pod without serviceAccountName: %v", err)
		}
		if p.Spec.ServiceAccountName != "default" {
			t.Errorf("serviceAccountName = %q, want default (ServiceAccount admission plugin off?)", p.Spec.ServiceAccountName)
		}
		found := false
		for _, v := range p.Spec.Volumes {
			found = found || strings.HasPrefix(v.Name, "kube-api-access-")
		}
		if !found {
			t.Errorf("no kube-api-access-* volume added; volumes: %+v", p.Spec.Volumes)
		}
	})

	review := func(t *testing.T, token, audience string) authenticationv1.TokenReviewStatus {
		t.Helper()
		tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}}}
		got, err := env.Clientset.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token review: %v", err)
		}
		return got.Status
	}

	token := env.Token(t, ns, "app", signapi.Audience, time.Hour, pod)

	t.Run("bound token authenticates with pod extras", func(t *testing.T) {
		st := review(t, token, signapi.Audience)
		if !st.Authenticated {
			t.Fatalf("not authenticated: %q", st.Error)
		}
		if want := "system:serviceaccount:" + ns + ":app"; st.User.Username != want {
			t.Errorf("username = %q, want %q", st.User.Username, want)
		}
		if got := st.User.Extra[podNameExtra]; len(got) != 1 || got[0] != pod.Name {
			t.Errorf("extra %s = %v, want [%s]", podNameExtra, got, pod.Name)
		}
		if got := st.User.Extra[podUIDExtra]; len(got) != 1 || got[0] != string(pod.UID) {
			t.Errorf("extra %s = %v, want [%s]", podUIDExtra, got, pod.UID)
		}
		if len(st.Audiences) != 1 || st.Audiences[0] != signapi.Audience {
			t.Errorf("audiences = %v, want [%s]", st.Audiences, signapi.Audience)
		}
	})

	t.Run("wrong audience is rejected", func(t *testing.T) {
		if st := review(t, token, "some-other-audience"); st.Authenticated {
			t.Errorf("token for %q authenticated for another audience as %q", signapi.Audience, st.User.Username)
		}
	})

	t.Run("unbound token has no pod extra", func(t *testing.T) {
		st := review(t, env.Token(t, ns, "app", signapi.Audience, 0, nil), signapi.Audience)
		if !st.Authenticated {
			t.Fatalf("not authenticated: %q", st.Error)
		}
		if _, ok := st.User.Extra[podNameExtra]; ok {
			t.Errorf("unbound token carries %s: %v", podNameExtra, st.User.Extra)
		}
	})

	t.Run("token of a deleted pod is invalid", func(t *testing.T) {
		p := newPod(ns, "short-lived", "app")
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatalf("create pod: %v", err)
		}
		tok := env.Token(t, ns, "app", signapi.Audience, time.Hour, p)
		// No kubelet: a zero grace period deletes the object at once.
		if err := env.Clientset.CoreV1().Pods(ns).Delete(ctx, p.Name, *metav1.NewDeleteOptions(0)); err != nil {
			t.Fatalf("delete pod: %v", err)
		}
		// The API server checks the bound pod through its informer cache, which
		// learns of the deletion a moment later: wait for it, bounded.
		poll.Eventually(t, 10*time.Second, "token bound to the deleted pod refused", func() (bool, string) {
			st := review(t, tok, signapi.Audience)
			return !st.Authenticated, fmt.Sprintf("still authenticates as %q", st.User.Username)
		})
	})

	t.Run("token for a missing service account fails", func(t *testing.T) {
		if _, err := env.RequestToken(ctx, ns, "nobody", signapi.Audience, 0, nil); err == nil {
			t.Error("token request for a missing ServiceAccount succeeded")
		}
	})

	t.Run("mutating webhook is called for selected namespaces", func(t *testing.T) {
		env.CreateNamespace(t, "hooked", map[string]string{webhookLabel: "on"})
		hooked := newPod("hooked", "p", "")
		if err := env.Client.Create(ctx, hooked); err != nil {
			t.Fatalf("create pod in hooked namespace: %v", err)
		}
		if hooked.Annotations[mutatedKey] != "true" {
			t.Errorf("pod in namespace labelled %s=on not mutated: annotations %v", webhookLabel, hooked.Annotations)
		}
		if _, ok := pod.Annotations[mutatedKey]; ok {
			t.Errorf("pod in an unlabelled namespace was mutated: %v", pod.Annotations)
		}
	})

	t.Run("kubectl talks to the control plane", func(t *testing.T) {
		out, err := env.Kubectl(ctx, "get", "serviceaccounts", "-n", ns, "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"serviceaccount/default", "serviceaccount/app"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl output %q lacks %q", out, want)
			}
		}
		out, err = env.Kubectl(ctx, "version", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Client struct{ GitVersion string } `json:"clientVersion"`
			Server struct{ GitVersion string } `json:"serverVersion"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("parse kubectl version %q: %v", out, err)
		}
		if v.Client.GitVersion != v.Server.GitVersion || !strings.HasPrefix(v.Server.GitVersion, "v1.") {
			t.Errorf("kubectl %q vs kube-apiserver %q: want the same real version", v.Client.GitVersion, v.Server.GitVersion)
		}
		t.Logf("kubectl %s, kube-apiserver %s", v.Client.GitVersion, v.Server.GitVersion)
	})
}

func TestMissingAssets(t *testing.T) {
	t.Setenv(kubetest.AssetsEnv, t.TempDir())
	t.Setenv(kubetest.RequireEnv, "")

	_, err := kubetest.AssetsDir()
	if !errors.Is(err, kubetest.ErrAssetsMissing) || !strings.Contains(err.Error(), "etcd, kube-apiserver, kubectl") {
		t.Errorf("AssetsDir on an empty %s: err = %v, want ErrAssetsMissing naming all three binaries", kubetest.AssetsEnv, err)
	}
	if env, err := kubetest.Launch(); !errors.Is(err, kubetest.ErrAssetsMissing) || env != nil {
		t.Errorf("Launch without assets = %v, %v; want nil, ErrAssetsMissing", env, err)
	}
	for name, use := range map[string]func(t *testing.T){
		"Start":   func(t *testing.T) { kubetest.Start(t) },
		"Require": func(t *testing.T) { kubetest.Require(t, nil) },
	} {
		ran := false
		t.Run(name, func(t *testing.T) {
			use(t)
			ran = true
		})
		if ran {
			t.Errorf("%s without assets and without %s did not skip", name, kubetest.RequireEnv)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// This test runs in internal/kubetest, so the root is two levels up and holds go.mod.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Dir(filepath.Dir(wd)); root != want {
		t.Errorf("RepoRoot = %q, want %q", root, want)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Errorf("no go.mod at RepoRoot: %v", err)
	}
}
