// Package rotate walks a root rotation of podtls's CA (podtls ca rotate):
// it reads where the rotation stands (the CA Secret's phase, which trust
// bundles and ClusterTrustBundles carry which roots, which workloads still
// serve a leaf of the old chain) and runs each step (ca.RotationPublish,
// ca.RotationSwitch, ca.RotationRetire) on the CA Secret, refusing a step
// that would break traffic unless forced.
package rotate

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/kube"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

// Options say where the CA lives and how to read the workloads.
type Options struct {
	// Namespace of podtls-controller and Secret of its CA.
	Namespace, Secret string
	// AdminGet reads a sidecar's admin endpoint (kube.AdminGet); nil skips
	// the workloads (they are then not counted).
	AdminGet kube.AdminGetter
	// Force runs a step whose check failed.
	Force bool
	Now   func() time.Time
}

// Root is one root certificate as the report shows it.
type Root struct {
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"` // first 16 hex digits, as in ClusterTrustBundle names
	NotAfter time.Time `json:"notAfter"`
}

// Report is where a rotation stands.
type Report struct {
	Phase        string `json:"phase"`
	Intermediate string `json:"intermediate"`
	// IntermediateKeyID is the signing intermediate's subject key ID (hex):
	// workloads whose leaf has another authority key ID are on the old chain.
	IntermediateKeyID string `json:"intermediateKeyId"`
	Signing           []Root `json:"signing"`
	Next              *Root  `json:"next,omitempty"`
	Retiring          []Root `json:"retiring,omitempty"`
	// Lagging are trust-bundle ConfigMaps ("NS") and ClusterTrustBundles
	// ("clustertrustbundles") that do not yet carry every published root.
	Lagging []string `json:"lagging,omitempty"`
	// ClusterTrustBundles is true where podtls publishes its roots as
	// ClusterTrustBundles (Kubernetes >= 1.37 with the signer running).
	ClusterTrustBundles bool `json:"clusterTrustBundles"`
	// Workloads by chain: "current" (signed by the signing intermediate),
	// "old", "unknown" (sidecar unreadable or too old to say).
	Workloads map[string]int `json:"workloads"`
	// OnOldChain and Unknown name the pods ("NS/NAME"), at most 20 each.
	OnOldChain []string `json:"onOldChain,omitempty"`
	Unknown    []string `json:"unknown,omitempty"`
}

func rootOf(c *x509.Certificate) Root {
	sum := sha256.Sum256(c.Raw)
	return Root{Subject: c.Subject.String(), SHA256: hex.EncodeToString(sum[:8]), NotAfter: c.NotAfter.UTC()}
}

// Collect reads the CA Secret, the trust bundles and the workloads.
func Collect(ctx context.Context, kc kubernetes.Interface, o Options) (*Report, error) {
	sec, err := kc.CoreV1().Secrets(o.Namespace).Get(ctx, o.Secret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read the CA Secret %s/%s: %w", o.Namespace, o.Secret, err)
	}
	r, err := ca.ReadRotation(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("CA Secret %s/%s: %w", o.Namespace, o.Secret, err)
	}
	rep := &Report{Phase: r.Phase, Intermediate: r.Intermediate.Subject.String(),
		IntermediateKeyID: hex.EncodeToString(r.Intermediate.SubjectKeyId), Workloads: map[string]int{}}
	published := slices.Clone(r.Signing)
	for _, c := range r.Signing {
		rep.Signing = append(rep.Signing, rootOf(c))
	}
	if r.Next != nil {
		n := rootOf(r.Next)
		rep.Next = &n
		published = append(published, r.Next)
	}
	for _, c := range r.Retiring {
		rep.Retiring = append(rep.Retiring, rootOf(c))
		published = append(published, c)
	}
	if err := rep.trustBundles(ctx, kc, published); err != nil {
		return nil, err
	}
	if o.AdminGet != nil {
		if err := rep.workloads(ctx, kc, o.AdminGet); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// trustBundles finds the ConfigMaps and ClusterTrustBundles missing a
// published root.
func (rep *Report) trustBundles(ctx context.Context, kc kubernetes.Interface, published []*x509.Certificate) error {
	cms, err := kc.CoreV1().ConfigMaps(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", contract.TrustBundleConfigMap).String()})
	if err != nil {
		return fmt.Errorf("list the trust-bundle ConfigMaps: %w", err)
	}
	for _, cm := range cms.Items {
		if !holdsAll([]byte(cm.Data[contract.TrustBundleKey]), published) {
			rep.Lagging = append(rep.Lagging, cm.Namespace)
		}
	}
	ctbs, err := kc.CertificatesV1().ClusterTrustBundles().List(ctx, metav1.ListOptions{
		LabelSelector: contract.TrustBundleLabel + "=" + contract.TrustBundleLabelValue})
	switch {
	case apierrors.IsNotFound(err):
		return nil // Kubernetes < 1.37: the agent's ConfigMaps only
	case err != nil:
		return fmt.Errorf("list the ClusterTrustBundles: %w", err)
	}
	if len(ctbs.Items) == 0 {
		return nil // the signer does not run (--pod-certificates off): nothing mounts them
	}
	rep.ClusterTrustBundles = true
	var all []byte
	for _, b := range ctbs.Items {
		all = append(all, b.Spec.TrustBundle...)
	}
	if !holdsAll(all, published) {
		rep.Lagging = append(rep.Lagging, "clustertrustbundles")
	}
	return nil
}

func holdsAll(bundle []byte, roots []*x509.Certificate) bool {
	have := Certificates(bundle)
	for _, r := range roots {
		if !slices.ContainsFunc(have, r.Equal) {
			return false
		}
	}
	return true
}

// workloads classifies every running injected pod by the chain of the
// leaf its sidecar serves.
func (rep *Report) workloads(ctx context.Context, kc kubernetes.Interface, get kube.AdminGetter) error {
	pods, err := kc.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !inject.HasSidecar(p) || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		name := p.Namespace + "/" + p.Name
		switch chainOf(ctx, get, p, rep.IntermediateKeyID) {
		case "current":
			rep.Workloads["current"]++
		case "old":
			rep.Workloads["old"]++
			if len(rep.OnOldChain) < 20 {
				rep.OnOldChain = append(rep.OnOldChain, name)
			}
		default:
			rep.Workloads["unknown"]++
			if len(rep.Unknown) < 20 {
				rep.Unknown = append(rep.Unknown, name)
			}
		}
	}
	return nil
}

// chainOf is "current", "old" or "unknown" for the leaf pod's sidecar serves.
func chainOf(ctx context.Context, get kube.AdminGetter, p *corev1.Pod, keyID string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := get(ctx, p.Namespace, p.Name, "/certs")
	if err != nil {
		return "unknown"
	}
	var snap struct {
		Mesh *struct {
			AuthorityKeyID string `json:"authority_key_id"`
		} `json:"mesh"`
	}
	if json.Unmarshal(raw, &snap) != nil || snap.Mesh == nil || snap.Mesh.AuthorityKeyID == "" {
		return "unknown"
	}
	if snap.Mesh.AuthorityKeyID == keyID {
		return "current"
	}
	return "old"
}

// Certificates returns the certificates of a PEM bundle that parse,
// skipping anything else: a trust bundle is compared, not validated here.
func Certificates(bundle []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
