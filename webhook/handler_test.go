package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

func testHandler(t testing.TB) *Handler {
	t.Helper()
	nss := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{contract.Inject: "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
	}
	cfg := inject.DefaultConfig()
	cfg.TrustRootsPEM = "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n"
	return &Handler{
		Namespaces: fake.NewClientBuilder().WithRuntimeObjects(nss...).Build(),
		Config:     NewConfigSource(cfg),
	}
}

func podRequest(t testing.TB, ns string, pod *corev1.Pod) admission.Request {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "u1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	}}
}

func newPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
}

// applyPatch applies the response's patch to the request's raw object, as the
// API server does, and decodes the result.
func applyPatch(t testing.TB, raw []byte, resp admission.Response) (*corev1.Pod, []byte) {
	t.Helper()
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatalf("invalid patch: %v", err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, ops)
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(out, pod); err != nil {
		t.Fatalf("patched pod: %v", err)
	}
	return pod, out
}

func TestHandle(t *testing.T) {
	h := testHandler(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		ns         string
		ann        map[string]string
		wantAllow  bool
		wantPatch  bool
		wantMsg    string
		wantWarned bool
	}{
		{name: "labelled namespace", ns: "demo", ann: map[string]string{contract.Inbound: "8443:8080"}, wantAllow: true, wantPatch: true},
		{name: "opt out", ns: "demo", ann: map[string]string{contract.Inject: "false"}, wantAllow: true},
		{name: "opt in", ns: "shop", ann: map[string]string{contract.Inject: "true", contract.Inbound: "8443:8080"}, wantAllow: true, wantPatch: true},
		{name: "not asked", ns: "shop", wantAllow: true},
		{name: "unknown namespace", ns: "ghost", wantAllow: true},
		{name: "system namespace", ns: "kube-system", ann: map[string]string{contract.Inject: "true"}, wantAllow: true},
		{name: "bad annotation", ns: "demo", ann: map[string]string{contract.Inbound: "8443"}, wantMsg: "annotation podtls.io/inbound"},
		{name: "bad inject value", ns: "shop", ann: map[string]string{contract.Inject: "yes"}, wantMsg: "podtls.io/inject"},
		{name: "warning, injected", ns: "demo", ann: map[string]string{contract.Inbound: "8443:8080", contract.Mode: "http", contract.Allow: "spiffe://other.org/ns/a/sa/b"}, wantAllow: true, wantPatch: true, wantWarned: true},
		{name: "no listeners: skipped with a warning", ns: "demo", wantAllow: true, wantWarned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := podRequest(t, tt.ns, newPod(tt.ann))
			resp := h.Handle(ctx, req)
			if resp.Allowed != tt.wantAllow {
				t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, tt.wantAllow, resp.Result)
			}
			if tt.wantMsg != "" && (resp.Result == nil || !strings.Contains(resp.Result.Message, tt.wantMsg)) {
				t.Errorf("message %+v does not contain %q", resp.Result, tt.wantMsg)
			}
			if (len(resp.Patches) > 0) != tt.wantPatch {
				t.Fatalf("patches = %d, want some: %v", len(resp.Patches), tt.wantPatch)
			}
			if tt.wantWarned && len(resp.Warnings) == 0 {
				t.Error("want admission warnings")
			}
			if !tt.wantPatch {
				return
			}
			pod, raw := applyPatch(t, req.Object.Raw, resp)
			if !inject.HasSidecar(pod) || pod.Spec.InitContainers[0].Name != contract.ContainerName {
				t.Fatalf("no native sidecar first: %+v", pod.Spec.InitContainers)
			}
			// Re-invocation: the API server sends our own output back.
			req2 := req
			req2.Object.Raw = raw
			if resp2 := h.Handle(ctx, req2); !resp2.Allowed || len(resp2.Patches) != 0 {
				t.Errorf("second invocation: allowed=%v patches=%v", resp2.Allowed, resp2.Patches)
			}
		})
	}
}

func TestHandleFallbackLabels(t *testing.T) {
	h := testHandler(t)
	h.FallbackLabels = map[string]string{contract.Inject: contract.NamespaceEnabled}
	resp := h.Handle(context.Background(), podRequest(t, "created-just-now", newPod(map[string]string{contract.Inbound: "8443:8080"})))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("labelled webhook must inject when the namespace is not cached yet: %+v", resp)
	}
}

func TestHandleIgnoresOtherRequests(t *testing.T) {
	h := testHandler(t)
	req := podRequest(t, "demo", newPod(nil))
	req.Operation = admissionv1.Update
	if resp := h.Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("update: %+v", resp)
	}
	req = podRequest(t, "demo", newPod(nil))
	req.Object.Raw = []byte(`{"spec":`)
	if resp := h.Handle(context.Background(), req); resp.Allowed || resp.Result.Code != http.StatusBadRequest {
		t.Errorf("garbage: %+v", resp)
	}
}

func TestHandleRecoversPanic(t *testing.T) {
	h := &Handler{Config: nil} // Load on a nil source panics
	resp := h.Handle(context.Background(), podRequest(t, "demo", newPod(nil)))
	if resp.Allowed || resp.Result.Code != http.StatusInternalServerError {
		t.Fatalf("want Errored 500, got %+v", resp)
	}
}

// FuzzAdmissionReview sends arbitrary bytes through controller-runtime's
// AdmissionReview decoding into the handler: no panic, always a well-formed
// review, and every patch applies to the request's object and yields a pod.
func FuzzAdmissionReview(f *testing.F) {
	seed := func(ns string, ann map[string]string) {
		req := podRequest(f, ns, newPod(ann))
		b, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request:  &req.AdmissionRequest})
		f.Add(b)
	}
	seed("demo", map[string]string{contract.Inbound: "8443:8080", contract.Upstreams: "a.demo.svc:1@2"})
	seed("shop", map[string]string{contract.Inject: "true", contract.ExternalHosts: "a.example.com"})
	seed("demo", map[string]string{contract.Mode: "x"})
	f.Add([]byte(`{"request":{"uid":"x","kind":{"kind":"Pod"},"operation":"CREATE","object":{"metadata":{"annotations":null}}}}`))
	f.Add([]byte(`{"request":{"kind":{"kind":"Pod"},"operation":"CREATE","object":[]}}`))

	h := testHandler(f)
	wh := &admission.Webhook{Handler: h}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, webhookconfig.PathLabelled, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(rec, r)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
			t.Fatalf("response is not an AdmissionReview: %v: %s", err, rec.Body.Bytes())
		}
		if review.Response == nil || review.Response.Patch == nil {
			return
		}
		// Decode the body as the webhook's deserializer does: a body that
		// starts with '{' is JSON, read with case-sensitive keys (duplicate
		// keys: last wins, and a null RawExtension keeps the earlier value);
		// anything else is YAML, turned into JSON first.
		js := body
		if !utilyaml.IsJSONBuffer(body) {
			var err error
			if js, err = yaml.YAMLToJSON(body); err != nil {
				t.Fatalf("patch for an undecodable request: %s", body)
			}
		}
		var in admissionv1.AdmissionReview
		if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &in); err != nil || in.Request == nil {
			t.Fatalf("patch for an undecodable request: %s", body)
		}
		p, err := jsonpatch.DecodePatch(review.Response.Patch)
		if err != nil {
			t.Fatalf("invalid JSON patch %s: %v", review.Response.Patch, err)
		}
		out, err := p.Apply(in.Request.Object.Raw)
		if err != nil {
			t.Fatalf("patch does not apply: %v", err)
		}
		var pod corev1.Pod
		if err := json.Unmarshal(out, &pod); err != nil || !inject.HasSidecar(&pod) {
			t.Fatalf("patched object is not an injected pod: %v", err)
		}
	})
}

func TestPasswordSecretCheck(t *testing.T) {
	ann := map[string]string{contract.AppCerts: "/etc/tls", contract.AppCertFormats: "pkcs12", contract.AppCertPassword: "store-pass"}
	forbidden := interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		return apierrors.NewForbidden(corev1.Resource("secrets"), key.Name, errors.New("no RBAC"))
	}}
	existing := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "store-pass", Namespace: "demo"}}
	tests := []struct {
		name    string
		secrets client.Reader
		allowed bool
		message string
	}{
		{"missing", fake.NewClientBuilder().Build(), false, "Secret demo/store-pass does not exist; create it with the stores' password under key \"password\""},
		{"present", fake.NewClientBuilder().WithObjects(existing).Build(), true, ""},
		{"cannot look", fake.NewClientBuilder().WithInterceptorFuncs(forbidden).Build(), true, "cannot check that Secret demo/store-pass"},
		{"no reader", nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testHandler(t)
			h.Secrets = tt.secrets
			resp := h.Handle(context.Background(), podRequest(t, "demo", newPod(ann)))
			if resp.Allowed != tt.allowed {
				t.Fatalf("allowed %v: %+v", resp.Allowed, resp.Result)
			}
			all := strings.Join(resp.Warnings, "\n")
			if resp.Result != nil {
				all += resp.Result.Message
			}
			if tt.message != "" && !strings.Contains(all, tt.message) {
				t.Fatalf("response lacks %q: %s", tt.message, all)
			}
		})
	}
}
