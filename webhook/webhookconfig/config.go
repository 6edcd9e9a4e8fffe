// Package webhookconfig builds the MutatingWebhookConfiguration of podtls. The tests
// install it as built here, the controller patches its caBundle, and the Helm
// chart is generated from the rendered webhook.yaml beside this file.
package webhookconfig

import (
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/contract"
)

// Names of the two webhooks inside the configuration.
const (
	// LabelledWebhook serves namespaces labelled podtls.io/inject=enabled. Its
	// failurePolicy is Fail: a pod there must never start without its sidecar.
	LabelledWebhook = "namespace.inject.podtls.io"
	// OptInWebhook serves every other non-system namespace, for pods that opt in
	// by annotation. A namespaceSelector cannot see pod annotations, so it sees
	// all their pods and Decide skips most; failurePolicy Ignore keeps those
	// namespaces working while the controller is down (the audit reconciler
	// reports pods that slipped through).
	OptInWebhook = "pod.inject.podtls.io"
)

// Paths the two webhooks of the MutatingWebhookConfiguration call.
const (
	// PathLabelled serves namespaces labelled podtls.io/inject=enabled (failurePolicy Fail).
	PathLabelled = "/mutate-v1-pod"
	// PathOptIn serves every other non-system namespace (failurePolicy Ignore).
	PathOptIn = "/mutate-v1-pod-optin"
)

// Options say where the API server reaches the webhook.
type Options struct {
	// Name of the MutatingWebhookConfiguration (default "podtls").
	Name string
	// Namespace of the controller; it is never injected.
	Namespace string
	// ServiceName and ServicePort of the controller's webhook Service.
	ServiceName string
	ServicePort int32
	// URL, when set, replaces the Service: "https://host:port" without a path.
	URL string
	// CABundle verifies the webhook's serving certificate (PEM).
	CABundle []byte
}

// DefaultOptions are the values of a standard install.
func DefaultOptions() Options {
	return Options{Name: "podtls", Namespace: "podtls-system", ServiceName: "podtls-controller", ServicePort: 443}
}

// ExcludedNamespaces are never sent to the webhook: the system namespaces and the
// controller's own (so the controller can always start, even without itself).
func ExcludedNamespaces(controllerNamespace string) []string {
	ns := slices.Clone(contract.SystemNamespaces)
	if controllerNamespace != "" && !slices.Contains(ns, controllerNamespace) {
		ns = append(ns, controllerNamespace)
	}
	return ns
}

// MutatingWebhookConfiguration builds the configuration.
func MutatingWebhookConfiguration(o Options) *admissionregistrationv1.MutatingWebhookConfiguration {
	if o.Name == "" {
		o.Name = "podtls"
	}
	notSystem := metav1.LabelSelectorRequirement{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: ExcludedNamespaces(o.Namespace),
	}
	labelled := metav1.LabelSelectorRequirement{
		Key: contract.Inject, Operator: metav1.LabelSelectorOpIn, Values: []string{contract.NamespaceEnabled},
	}
	notLabelled := labelled
	notLabelled.Operator = metav1.LabelSelectorOpNotIn
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Labels: map[string]string{
			"app.kubernetes.io/name": "podtls", "app.kubernetes.io/component": "webhook"}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook(LabelledWebhook, o, PathLabelled, admissionregistrationv1.Fail, labelled, notSystem),
			hook(OptInWebhook, o, PathOptIn, admissionregistrationv1.Ignore, notLabelled, notSystem),
		},
	}
}

func hook(name string, o Options, path string, policy admissionregistrationv1.FailurePolicyType,
	reqs ...metav1.LabelSelectorRequirement) admissionregistrationv1.MutatingWebhook {
	return admissionregistrationv1.MutatingWebhook{
		Name:                    name,
		ClientConfig:            ClientConfig(o, path),
		AdmissionReviewVersions: []string{"v1"},
		SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
		FailurePolicy:           ptr.To(policy),
		MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
		ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
		TimeoutSeconds:          ptr.To[int32](5),
		NamespaceSelector:       &metav1.LabelSelector{MatchExpressions: reqs},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				Scope: ptr.To(admissionregistrationv1.NamespacedScope),
			},
		}},
	}
}

// ClientConfig is the client config of one webhook path: by URL when o.URL is
// set, else through the Service.
func ClientConfig(o Options, path string) admissionregistrationv1.WebhookClientConfig {
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: o.CABundle}
	if o.URL != "" {
		cc.URL = ptr.To(o.URL + path)
		return cc
	}
	port := o.ServicePort
	if port == 0 {
		port = 443
	}
	cc.Service = &admissionregistrationv1.ServiceReference{
		Namespace: o.Namespace, Name: o.ServiceName, Path: ptr.To(path), Port: ptr.To(port),
	}
	return cc
}
