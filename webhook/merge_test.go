package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podtls/podtls/contract"
)

// A pod from a newer API server: fields our types do not know, and quantities
// spelled non-canonically. The patch must add the sidecar and nothing else.
const futurePod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"podtls.io/inbound":"8443:8080"}},
"spec":{"futureSpecField":{"a":1},
"initContainers":[{"name":"migrate","image":"m","futureContainerField":"keep-me","resources":{"requests":{"cpu":"1000m"}}}],
"containers":[{"name":"app","image":"a","resources":{"limits":{"memory":"1024Mi","cpu":"0.5"}}}]}}`

func TestPatchKeepsUnknownFields(t *testing.T) {
	h := testHandler(t)
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Namespace: "demo",
		Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(futurePod)}}}
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("not injected: %+v", resp.Result)
	}
	for _, op := range resp.Patches {
		// Index 0 of initContainers becomes the sidecar: rewriting it is expected.
		if !strings.HasPrefix(op.Path, "/spec/initContainers/0") && (op.Operation == "remove" || strings.Contains(op.Path, "resources")) {
			t.Errorf("unexpected patch operation %s %s", op.Operation, op.Path)
		}
	}
	_, out := applyPatch(t, req.Object.Raw, resp)
	var got struct {
		Spec struct {
			FutureSpecField map[string]any   `json:"futureSpecField"`
			InitContainers  []map[string]any `json:"initContainers"`
			Containers      []map[string]any `json:"containers"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	ic := got.Spec.InitContainers
	if len(ic) != 2 || ic[0]["name"] != contract.ContainerName || ic[1]["name"] != "migrate" {
		t.Fatalf("init containers: %v", ic)
	}
	if _, leaked := ic[0]["futureContainerField"]; leaked {
		t.Error("unknown field of the shifted container leaked onto the sidecar")
	}
	if ic[1]["futureContainerField"] != "keep-me" {
		t.Errorf("unknown container field lost: %v", ic[1])
	}
	if got.Spec.FutureSpecField == nil {
		t.Error("unknown spec field lost")
	}
	if cpu := ic[1]["resources"].(map[string]any)["requests"].(map[string]any)["cpu"]; cpu != "1000m" {
		t.Errorf("quantity respelled: %v", cpu)
	}
	if mem := got.Spec.Containers[0]["resources"].(map[string]any)["limits"].(map[string]any)["memory"]; mem != "1024Mi" {
		t.Errorf("quantity respelled: %v", mem)
	}
}
