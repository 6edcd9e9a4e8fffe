// Package mesh runs podtls on the real single-node cluster (e2e/cluster) the way a user
// would on any cluster: the controller installed from plain objects with least-privilege
// RBAC, a labelled namespace, annotated workloads talking mTLS through their sidecars.
//
// Like e2e/node it needs root and the node binaries, and runs only with PODTLS_E2E_NODE=1
// (skips otherwise) or PODTLS_REQUIRE_NODE=1 (fails on missing prerequisites):
//
//	PODTLS_REQUIRE_NODE=1 go test -count=1 -v -timeout 20m ./e2e/mesh/
//
// The server app is testdata/whoami: it prints the client identity header of HTTP mode.
package mesh

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/webhook/config"
)

// Install describes one podtls installation.
type Install struct {
	Namespace       string // default podtls-system
	ControllerImage string
	SidecarImage    string
	// PullPolicy of the controller image (Never for images imported into the node).
	PullPolicy corev1.PullPolicy
	// ExtraArgs are appended to the controller's command line.
	ExtraArgs []string
	// Replicas of the controller (default 1; a production install runs 2).
	Replicas int32
}

// Fixed names of an installation.
const (
	controllerName = "podtls-controller"
	webhookName    = "podtls"
	caSecretName   = "podtls-ca"
)

func (in Install) namespace() string {
	if in.Namespace == "" {
		return "podtls-system"
	}
	return in.Namespace
}

// Objects are the installation's objects in the order they are applied.
func (in Install) Objects() []any {
	ns := in.namespace()
	labels := map[string]string{"app.kubernetes.io/name": "podtls", "app.kubernetes.io/component": "controller"}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}
	}
	clusterMeta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Labels: labels}
	}
	read := []string{"get", "list", "watch"}
	clusterRole := &rbacv1.ClusterRole{
		ObjectMeta: clusterMeta(controllerName),
		Rules: []rbacv1.PolicyRule{
			// Informers: namespace labels (webhook, distributor, audit), pods (audit,
			// distributor, the CA's Service lookup for a caller), Services (CA DNS SANs).
			{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "services"}, Verbs: read},
			// The trust bundle ConfigMap in every injected namespace.
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
			// Events of the injection audit (on pods anywhere) and of leader election
			// (controller-runtime records core/v1 Events).
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			// The CA authenticates sidecars by their projected tokens.
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			// Its own webhook configuration only: the caBundle patcher reads it and
			// writes it back with Update.
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
				ResourceNames: []string{webhookName}, Verbs: []string{"get", "update"}},
		},
	}
	role := &rbacv1.Role{
		ObjectMeta: meta(controllerName),
		Rules: []rbacv1.PolicyRule{
			// The CA Secret: created on first start, read and updated afterwards. create
			// cannot be limited by name, so it is limited to this namespace.
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{caSecretName}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, Verbs: []string{"create"}},
			{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, ResourceNames: []string{controllerName},
				Verbs: []string{"get", "update"}},
		},
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: controllerName, Namespace: ns}}
	probe := func(path string, port int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port)}},
			PeriodSeconds: 2, FailureThreshold: 3,
		}
	}
	args := []string{"--namespace", ns, "--sidecar-image", in.SidecarImage, "--leader-elect"}
	args = append(args, in.ExtraArgs...)
	deploy := &appsv1.Deployment{
		ObjectMeta: meta(controllerName),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(max(in.Replicas, 1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            controllerName,
					TerminationGracePeriodSeconds: ptr.To[int64](10),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name: "controller", Image: in.ControllerImage, ImagePullPolicy: in.PullPolicy,
						Args: args,
						Ports: []corev1.ContainerPort{
							{Name: "webhook", ContainerPort: 9443}, {Name: "ca", ContainerPort: 8443},
							{Name: "metrics", ContainerPort: 8080}, {Name: "health", ContainerPort: 8081},
						},
						ReadinessProbe: probe("/readyz", 8081),
						LivenessProbe: func() *corev1.Probe {
							p := probe("/healthz", 8081)
							p.InitialDelaySeconds, p.PeriodSeconds, p.FailureThreshold = 10, 10, 3
							return p
						}(),
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: meta(controllerName),
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports: []corev1.ServicePort{
				{Name: "webhook", Port: 443, TargetPort: intstr.FromString("webhook")},
				{Name: "ca", Port: 8443, TargetPort: intstr.FromString("ca")},
			},
		},
	}
	mwc := config.MutatingWebhookConfiguration(config.Options{
		Name: webhookName, Namespace: ns, ServiceName: controllerName, ServicePort: 443,
	})
	return []any{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: meta(controllerName)},
		clusterRole,
		&rbacv1.ClusterRoleBinding{ObjectMeta: clusterMeta(controllerName), Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: controllerName}},
		role,
		&rbacv1.RoleBinding{ObjectMeta: meta(controllerName), Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: controllerName}},
		svc,
		mwc,
		deploy,
	}
}

// Apply creates every object of the installation (existing ones are left alone). The
// Deployment comes last, once the API server's authorizer grants the controller its
// permissions, so the controller never starts into RBAC refusals.
func (in Install) Apply(ctx context.Context, cs kubernetes.Interface) error {
	for _, obj := range in.Objects() {
		if _, ok := obj.(*appsv1.Deployment); ok {
			if err := in.waitAuthorized(ctx, cs); err != nil {
				return err
			}
		}
		if err := create(ctx, cs, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// ServiceAccountUser is the user name the controller authenticates as.
func (in Install) ServiceAccountUser() string {
	return "system:serviceaccount:" + in.namespace() + ":" + controllerName
}

// Can asks the API server whether the controller may do verb on the resource.
func (in Install) Can(ctx context.Context, cs kubernetes.Interface, attr authzv1.ResourceAttributes) (bool, error) {
	sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{User: in.ServiceAccountUser(), ResourceAttributes: &attr},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("subject access review %s %s: %w", attr.Verb, attr.Resource, err)
	}
	return sar.Status.Allowed, nil
}

// waitAuthorized polls until the controller's ClusterRole and Role are in effect.
func (in Install) waitAuthorized(ctx context.Context, cs kubernetes.Interface) error {
	checks := []authzv1.ResourceAttributes{
		{Verb: "list", Resource: "services"},
		{Verb: "get", Resource: "secrets", Namespace: in.namespace(), Name: caSecretName},
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, attr := range checks {
		for {
			ok, err := in.Can(ctx, cs, attr)
			if err == nil && ok {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("RBAC for %s not in effect (%s %s): last error %v: %w",
					in.ServiceAccountUser(), attr.Verb, attr.Resource, err, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func create(ctx context.Context, cs kubernetes.Interface, obj any) error {
	var err error
	var name string
	co := metav1.CreateOptions{}
	switch o := obj.(type) {
	case *corev1.Namespace:
		name = "namespace " + o.Name
		_, err = cs.CoreV1().Namespaces().Create(ctx, o, co)
	case *corev1.ServiceAccount:
		name = "serviceaccount " + o.Name
		_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, co)
	case *corev1.Service:
		name = "service " + o.Name
		_, err = cs.CoreV1().Services(o.Namespace).Create(ctx, o, co)
	case *rbacv1.ClusterRole:
		name = "clusterrole " + o.Name
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, co)
	case *rbacv1.ClusterRoleBinding:
		name = "clusterrolebinding " + o.Name
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, co)
	case *rbacv1.Role:
		name = "role " + o.Name
		_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, co)
	case *rbacv1.RoleBinding:
		name = "rolebinding " + o.Name
		_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, co)
	case *appsv1.Deployment:
		name = "deployment " + o.Name
		_, err = cs.AppsV1().Deployments(o.Namespace).Create(ctx, o, co)
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		name = "mutatingwebhookconfiguration " + o.Name
		_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, o, co)
	default:
		return fmt.Errorf("create %T: unsupported kind", obj)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	return nil
}
