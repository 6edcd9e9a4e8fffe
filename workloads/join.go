package workloads

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/contract"
)

// ErrRefused is wrapped by every refusal of a join or renewal that the
// caller caused (bad, used or expired token; no registration; another
// identity): the server answers 403 with the message, which names no secret.
var ErrRefused = errors.New("refused")

// Checker decides who a machine is: from its join token the first time,
// from its current certificate afterwards, and only while its registration
// exists.
type Checker struct {
	Kube     kubernetes.Interface
	Audience string // the join token's audience (the CA's)
}

// Join checks a join token and consumes it: the token must be a service
// account token bound to the workload's join Secret (kubectl create token
// SA --bound-object-kind Secret --bound-object-name podtls-join-NAME), the
// Secret and the registration must exist and agree. The Secret is deleted
// (with its UID as precondition) before the caller gets its certificate, so
// the token works once, even for two concurrent requests.
func (c *Checker) Join(ctx context.Context, token string) (ca.Caller, Registration, error) {
	rev, err := c.Kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{c.Audience}}}, metav1.CreateOptions{})
	if err != nil {
		return ca.Caller{}, Registration{}, fmt.Errorf("review the join token: %w", err)
	}
	st := rev.Status
	if !st.Authenticated {
		msg := "join token not accepted"
		if st.Error != "" {
			msg += ": " + st.Error // expired, invalidated (its Secret deleted: used), wrong audience
		}
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	if !slices.Contains(st.Audiences, c.Audience) {
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: join token audiences %q do not include %q", ErrRefused, st.Audiences, c.Audience)
	}
	ns, sa, ok := serviceAccountOf(st.User.Username)
	if !ok {
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: join token of %q, not of a service account", ErrRefused, st.User.Username)
	}
	bound, err := boundSecret(token)
	if err != nil {
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	sec, err := c.Kube.CoreV1().Secrets(ns).Get(ctx, bound.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: join Secret %s/%s is gone: the token was used", ErrRefused, ns, bound.Name)
	case err != nil:
		return ca.Caller{}, Registration{}, fmt.Errorf("read join Secret %s/%s: %w", ns, bound.Name, err)
	case string(sec.UID) != bound.UID || sec.Type != contract.WorkloadJoinSecretType || sec.Labels[contract.ExternalWorkload] == "":
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: the token is bound to Secret %s/%s, which is not a podtls join Secret", ErrRefused, ns, bound.Name)
	}
	name := sec.Labels[contract.ExternalWorkload]
	reg, err := c.registration(ctx, ns, name, sa)
	if err != nil {
		return ca.Caller{}, Registration{}, err
	}
	uid := sec.UID
	err = c.Kube.CoreV1().Secrets(ns).Delete(ctx, sec.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return ca.Caller{}, Registration{}, fmt.Errorf("%w: join Secret %s/%s was used by another request", ErrRefused, ns, sec.Name)
	case err != nil:
		return ca.Caller{}, Registration{}, fmt.Errorf("consume join Secret %s/%s: %w", ns, sec.Name, err)
	}
	return ca.Caller{Namespace: ns, ServiceAccount: sa}, reg, nil
}

// Renewal checks that the identity of a machine's current certificate still
// has a registration: deleting the registration stops renewals.
// It returns the registration's name.
func (c *Checker) Renewal(ctx context.Context, namespace, serviceAccount string) (ca.Caller, string, error) {
	l, err := c.Kube.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{LabelSelector: contract.ExternalWorkload})
	if err != nil {
		return ca.Caller{}, "", fmt.Errorf("list registrations in %s: %w", namespace, err)
	}
	for _, svc := range l.Items {
		if svc.Annotations[contract.WorkloadServiceAccount] == serviceAccount {
			return ca.Caller{Namespace: namespace, ServiceAccount: serviceAccount}, svc.Name, nil
		}
	}
	return ca.Caller{}, "", fmt.Errorf("%w: no workload registration in namespace %s runs as %s (deleted?): register the machine again", ErrRefused, namespace, serviceAccount)
}

// registration reads workload name's Service and checks its service account.
func (c *Checker) registration(ctx context.Context, ns, name, sa string) (Registration, error) {
	svc, err := c.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Registration{}, fmt.Errorf("%w: workload %s/%s is not registered", ErrRefused, ns, name)
	case err != nil:
		return Registration{}, fmt.Errorf("read registration %s/%s: %w", ns, name, err)
	case svc.Labels[contract.ExternalWorkload] != name:
		return Registration{}, fmt.Errorf("%w: Service %s/%s is not a workload registration", ErrRefused, ns, name)
	case svc.Annotations[contract.WorkloadServiceAccount] != sa:
		return Registration{}, fmt.Errorf("%w: workload %s/%s runs as %q, the join token is of %q", ErrRefused, ns, name, svc.Annotations[contract.WorkloadServiceAccount], sa)
	}
	r := Registration{Name: name, Namespace: ns, ServiceAccount: sa}
	for _, p := range svc.Spec.Ports {
		r.Ports = append(r.Ports, Port{Name: p.Name, Port: p.Port})
	}
	return r, nil
}

func serviceAccountOf(user string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	return ns, sa, ok && ns != "" && sa != ""
}

type objectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// boundSecret reads the Secret a service-account token is bound to, from
// its claims. Called only after the API server authenticated the token
// (so the claims are the API server's own).
func boundSecret(token string) (objectRef, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return objectRef{}, errors.New("join token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return objectRef{}, errors.New("join token: claims not base64url")
	}
	var claims struct {
		Kubernetes struct {
			Secret *objectRef `json:"secret"`
			Pod    *objectRef `json:"pod"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return objectRef{}, errors.New("join token: claims not JSON")
	}
	k := claims.Kubernetes
	switch {
	case k.Pod != nil:
		return objectRef{}, errors.New("a pod's token is not a join token")
	case k.Secret == nil || k.Secret.Name == "" || k.Secret.UID == "":
		return objectRef{}, errors.New("the token is not bound to a join Secret (kubectl create token SA --bound-object-kind Secret --bound-object-name podtls-join-NAME)")
	}
	return *k.Secret, nil
}
