// Package workload is `podtls workload`: it registers a machine outside
// Kubernetes (its Service, EndpointSlices, service account, one-time join
// Secret, and the controller's right to consume that Secret) and issues the
// join token the machine's podtls-sidecar gets its first certificate with.
package workload

import (
	"context"
	"errors"
	"fmt"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/workloads"
)

// DefaultTokenTTL is how long a join token is valid (the API server's
// minimum is 10 minutes).
const DefaultTokenTTL = 15 * time.Minute

// Options of Register and Token.
type Options struct {
	// Controller is the controller's service account (namespace/name), which
	// gets get/delete on the one join Secret and patch on the one Service.
	ControllerNamespace, ControllerServiceAccount string
	TokenTTL                                      time.Duration
}

// Register creates the registration's objects, the Service owning the others
// (deleting it deletes the registration), and returns a join token.
func Register(ctx context.Context, kc kubernetes.Interface, r workloads.Registration, o Options) (string, error) {
	if err := r.Validate(); err != nil {
		return "", fmt.Errorf("registration: %w", err)
	}
	objs := r.Objects()
	if _, err := kc.CoreV1().ServiceAccounts(r.Namespace).Create(ctx, objs.ServiceAccount, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", r.Namespace, r.ServiceAccount, err)
	}
	svc, err := kc.CoreV1().Services(r.Namespace).Create(ctx, objs.Service, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("service %s/%s exists: delete it (or the registration: podtls workload delete) first", r.Namespace, r.Name)
	}
	if err != nil {
		return "", fmt.Errorf("create service %s/%s: %w", r.Namespace, r.Name, err)
	}
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, BlockOwnerDeletion: ptr.To(true)}}
	for _, s := range objs.EndpointSlices {
		s.OwnerReferences = owner
		if _, err := kc.DiscoveryV1().EndpointSlices(r.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return "", fmt.Errorf("create endpoint slice %s/%s: %w", r.Namespace, s.Name, err)
		}
	}
	role, binding := controllerAccess(r, o, owner)
	if _, err := kc.RbacV1().Roles(r.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create role %s/%s: %w", r.Namespace, role.Name, err)
	}
	if _, err := kc.RbacV1().RoleBindings(r.Namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create role binding %s/%s: %w", r.Namespace, binding.Name, err)
	}
	return Token(ctx, kc, r.Namespace, r.Name, o)
}

// controllerAccess lets the controller consume this one join Secret and
// write this one Service's certificate status: nothing else in the namespace.
func controllerAccess(r workloads.Registration, o Options, owner []metav1.OwnerReference) (*rbacv1.Role, *rbacv1.RoleBinding) {
	name := contract.WorkloadJoinSecretName(r.Name)
	meta := metav1.ObjectMeta{Name: name, Namespace: r.Namespace, OwnerReferences: owner,
		Labels: map[string]string{contract.ExternalWorkload: r.Name, contract.ManagedByLabel: contract.ManagedByValue}}
	role := &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{name}, Verbs: []string{"get", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{r.Name}, Verbs: []string{"patch"}},
	}}
	binding := &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: o.ControllerNamespace, Name: o.ControllerServiceAccount}}}
	return role, binding
}

// Token (re)creates the workload's join Secret and returns a token of its
// service account bound to it, for the CA's audience: valid once, for
// o.TokenTTL. A previous, unused token stops working (its Secret is new).
func Token(ctx context.Context, kc kubernetes.Interface, ns, name string, o Options) (string, error) {
	svc, err := kc.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("registration %s/%s: %w", ns, name, err)
	}
	sa := svc.Annotations[contract.WorkloadServiceAccount]
	if svc.Labels[contract.ExternalWorkload] != name || sa == "" {
		return "", fmt.Errorf("service %s/%s is not a workload registration", ns, name)
	}
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, BlockOwnerDeletion: ptr.To(true)}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: contract.WorkloadJoinSecretName(name), Namespace: ns, OwnerReferences: owner,
		Labels: map[string]string{contract.ExternalWorkload: name, contract.ManagedByLabel: contract.ManagedByValue}},
		Type: contract.WorkloadJoinSecretType}
	err = kc.CoreV1().Secrets(ns).Delete(ctx, sec.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("replace join Secret %s/%s: %w", ns, sec.Name, err)
	}
	created, err := kc.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create join Secret %s/%s: %w", ns, sec.Name, err)
	}
	ttl := o.TokenTTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	tr, err := kc.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{signapi.Audience}, ExpirationSeconds: ptr.To(int64(ttl.Seconds())),
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: created.Name, UID: created.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create join token for %s/%s: %w", ns, sa, err)
	}
	if tr.Status.Token == "" {
		return "", errors.New("create join token: the API server returned none")
	}
	return tr.Status.Token, nil
}

// Delete removes the registration (its Service; the API server's garbage
// collector removes what it owns). The machine's next renewal is refused.
func Delete(ctx context.Context, kc kubernetes.Interface, ns, name string) error {
	svc, err := kc.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("registration %s/%s: %w", ns, name, err)
	}
	if svc.Labels[contract.ExternalWorkload] != name {
		return fmt.Errorf("service %s/%s is not a workload registration: not deleted", ns, name)
	}
	prop := metav1.DeletePropagationBackground
	if err := kc.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &prop,
		Preconditions: &metav1.Preconditions{UID: &svc.UID}}); err != nil {
		return fmt.Errorf("delete registration %s/%s: %w", ns, name, err)
	}
	return nil
}
