package workloads

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/internal/kubetest"
)

// register creates a registration's objects the way the CLI does.
func register(ctx context.Context, t *testing.T, cs kubernetes.Interface, r Registration) *corev1.Secret {
	t.Helper()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	o := r.Objects()
	if _, err := cs.CoreV1().ServiceAccounts(r.Namespace).Create(ctx, o.ServiceAccount, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(r.Namespace).Create(ctx, o.Service, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range o.EndpointSlices {
		if _, err := cs.DiscoveryV1().EndpointSlices(r.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sec, err := cs.CoreV1().Secrets(r.Namespace).Create(ctx, o.JoinSecret, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// joinToken is what `kubectl create token SA --bound-object-kind Secret` returns.
func joinToken(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa string, bound *corev1.Secret, audience string) string {
	t.Helper()
	spec := authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)}
	if bound != nil {
		spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func TestJoinAndRenewal(t *testing.T) {
	signer := kubetest.NewTokenSigner(t)
	env := kubetest.Start(t, signer.Options()...)
	cs := env.Clientset
	ctx := context.Background()
	const ns = "legacy"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reg := Registration{Name: "billing", Namespace: ns, ServiceAccount: "billing-vm", Addresses: []netip.Addr{netip.MustParseAddr("10.250.0.1")},
		Ports: []Port{{Name: "https", Port: 8443}}}
	join := register(ctx, t, cs, reg)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "intruder"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &Checker{Kube: cs, Audience: "podtls-ca"}
	refused := func(err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), want) {
			t.Fatalf("err %v, want a refusal with %q", err, want)
		}
	}

	// Refused: not bound to the Secret, another audience, another service account.
	_, _, err := c.Join(ctx, joinToken(ctx, t, cs, ns, "billing-vm", nil, "podtls-ca"))
	refused(err, "not bound to a join Secret")
	_, _, err = c.Join(ctx, joinToken(ctx, t, cs, ns, "billing-vm", join, "other"))
	refused(err, "join token not accepted")
	_, _, err = c.Join(ctx, joinToken(ctx, t, cs, ns, "intruder", join, "podtls-ca"))
	refused(err, `runs as "billing-vm", the join token is of "intruder"`)
	if _, err := cs.CoreV1().Secrets(ns).Get(ctx, join.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("a refused join consumed the Secret: %v", err)
	}

	// Expired: bound to the right Secret, signed by the API server's key, an hour old.
	sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "billing-vm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired := signer.Mint(t, ns, "billing-vm", string(sa.UID), "podtls-ca", now.Add(-2*time.Hour), now.Add(-time.Hour),
		map[string]any{"secret": map[string]string{"name": join.Name, "uid": string(join.UID)}})
	_, _, err = c.Join(ctx, expired)
	refused(err, "join token not accepted")
	t.Logf("an expired join token: %v", err)

	// The right token, twice at once: one join only.
	token := joinToken(ctx, t, cs, ns, "billing-vm", join, "podtls-ca")
	var wg sync.WaitGroup
	results := make([]error, 2)
	callers := make([]string, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			caller, got, err := c.Join(ctx, token)
			results[i], callers[i] = err, caller.Namespace+"/"+caller.ServiceAccount+" "+got.Name
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range results {
		if err == nil {
			ok++
			if callers[i] != "legacy/billing-vm billing" {
				t.Fatalf("joined as %s", callers[i])
			}
		} else if !errors.Is(err, ErrRefused) {
			t.Fatalf("second join: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d joins succeeded with one token: %v", ok, results)
	}
	// Used: the token is refused from now on (its Secret is gone).
	_, _, err = c.Join(ctx, token)
	refused(err, "")
	t.Logf("a used join token: %v", err)

	// Renewal while registered, refused once the registration is deleted.
	if got, name, err := c.Renewal(ctx, ns, "billing-vm"); err != nil || got.ServiceAccount != "billing-vm" || name != "billing" {
		t.Fatalf("renewal: %+v %s %v", got, name, err)
	}
	_, _, err = c.Renewal(ctx, ns, "intruder")
	refused(err, "no workload registration in namespace legacy runs as intruder")
	if err := cs.CoreV1().Services(ns).Delete(ctx, "billing", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Renewal(ctx, ns, "billing-vm")
	refused(err, "register the machine again")
}
