package workload

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/cli/status"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/workloads"
)

func TestRegisterJoinList(t *testing.T) {
	env := kubetest.Start(t)
	cs := env.Clientset
	ctx := context.Background()
	for _, ns := range []string{"legacy", "podtls-system"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{ControllerNamespace: "podtls-system", ControllerServiceAccount: "podtls-controller"}
	r := workloads.Registration{Name: "billing", Namespace: "legacy", ServiceAccount: "billing-vm",
		Addresses: []netip.Addr{netip.MustParseAddr("10.250.0.100")}, Ports: []workloads.Port{{Name: "https", Port: 8443}}}
	if _, err := Register(ctx, cs, workloads.Registration{Name: "Bad_Name", Namespace: "legacy"}, o); err == nil || !strings.Contains(err.Error(), "no address") {
		t.Fatalf("bad registration: %v", err)
	}
	token, err := Register(ctx, cs, r, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Register(ctx, cs, r, o); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("registered twice: %v", err)
	}
	ws, err := status.Workloads(ctx, cs, "legacy")
	if err != nil || len(ws) != 1 || !ws[0].JoinPending || ws[0].Addresses[0] != "10.250.0.100" || ws[0].ServiceAccount != "billing-vm" {
		t.Fatalf("listed %+v, %v", ws, err)
	}

	// The controller may consume this one join Secret and annotate this one Service, nothing else.
	can := func(verb, resource, name string) bool {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:podtls-system:podtls-controller", Groups: []string{"system:serviceaccounts"},
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: "legacy", Verb: verb, Resource: resource, Name: name}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	for _, c := range []struct {
		verb, resource, name string
		want                 bool
	}{
		{"delete", "secrets", "podtls-join-billing", true},
		{"get", "secrets", "podtls-join-billing", true},
		{"get", "secrets", "db-password", false},
		{"patch", "services", "billing", true},
		{"patch", "services", "frontend", false},
	} {
		if got := can(c.verb, c.resource, c.name); got != c.want {
			t.Errorf("controller may %s %s %s: %v, want %v", c.verb, c.resource, c.name, got, c.want)
		}
	}

	// The token is what the CA accepts once.
	checker := &workloads.Checker{Kube: cs, Audience: signapi.Audience}
	if _, reg, err := checker.Join(ctx, token); err != nil || reg.Name != "billing" {
		t.Fatalf("join with the registered token: %v", err)
	}
	if ws, _ := status.Workloads(ctx, cs, "legacy"); ws[0].JoinPending {
		t.Fatal("join still pending after the join")
	}
	// A new token works; it does not revive the old one.
	again, err := Token(ctx, cs, "legacy", "billing", o)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := checker.Join(ctx, token); err == nil {
		t.Fatal("the used token joined again after a new one was issued")
	}
	if _, _, err := checker.Join(ctx, again); err != nil {
		t.Fatalf("the new token: %v", err)
	}
	if err := Delete(ctx, cs, "legacy", "billing"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := checker.Renewal(ctx, "legacy", "billing-vm"); err == nil {
		t.Fatal("renewal after delete")
	}
	if err := Delete(ctx, cs, "legacy", "billing"); err == nil {
		t.Fatal("deleted twice")
	}
}
