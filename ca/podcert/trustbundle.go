package podcert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/contract"
)

// DefaultPublishInterval is how often the Publisher compares the published
// roots with the CA's (ca.Refresher re-reads the CA Secret as often).
const DefaultPublishInterval = 30 * time.Second

// Publisher keeps the CA's roots published as ClusterTrustBundles of
// contract.SignerName: one object per root, named after its SHA-256 and
// labelled contract.TrustBundleLabel, so a root added for a rotation is
// published beside the old ones and a root retired is unpublished, and pods
// that mount them with a clusterTrustBundle projection (signerName plus
// label selector) get every current root, kept fresh by their kubelet. It
// only touches objects carrying its label. Leader only.
//
// RBAC: get, list, create, update, delete clustertrustbundles; attest on
// signers named contract.SignerName.
type Publisher struct {
	// Client writes the bundles.
	Client client.Client
	// API lists them (direct reads: a handful of objects, no informer).
	API client.Reader
	// Bundle returns the CA's roots, PEM.
	Bundle   func() []byte
	Interval time.Duration
	Log      *slog.Logger
}

// NeedLeaderElection: one replica writes.
func (p *Publisher) NeedLeaderElection() bool { return true }

// Start publishes now and every Interval until ctx ends; failures are
// logged and tried again at the next tick.
func (p *Publisher) Start(ctx context.Context) error {
	if p.Interval <= 0 {
		p.Interval = DefaultPublishInterval
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			p.Log.Error("publish the mesh roots as ClusterTrustBundles", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync makes the published bundles match the CA's roots.
func (p *Publisher) Sync(ctx context.Context) error {
	want, err := desiredBundles(p.Bundle())
	if err != nil {
		return err
	}
	have := &certv1.ClusterTrustBundleList{}
	if err := p.API.List(ctx, have, client.MatchingLabels{contract.TrustBundleLabel: contract.TrustBundleLabelValue}); err != nil {
		return fmt.Errorf("list ClusterTrustBundles: %w", err)
	}
	var errs []error
	for i := range have.Items {
		b := &have.Items[i]
		pemText, keep := want[b.Name]
		switch {
		case !keep:
			if err := p.Client.Delete(ctx, b); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("unpublish retired root %s: %w", b.Name, err))
				continue
			}
			p.Log.Info("unpublished a retired mesh root", "cluster_trust_bundle", b.Name)
		case b.Spec.TrustBundle != pemText:
			b.Spec.TrustBundle = pemText
			if err := p.Client.Update(ctx, b); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", b.Name, err))
			}
		}
		delete(want, b.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		b := &certv1.ClusterTrustBundle{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				contract.TrustBundleLabel: contract.TrustBundleLabelValue, contract.ManagedByLabel: contract.ManagedByValue}},
			Spec: certv1.ClusterTrustBundleSpec{SignerName: contract.SignerName, TrustBundle: want[name]},
		}
		switch err := p.Client.Create(ctx, b); {
		case apierrors.IsAlreadyExists(err): // unlabelled: not ours to change
			errs = append(errs, fmt.Errorf("publish root %s: a ClusterTrustBundle of that name exists without label %s=%s",
				name, contract.TrustBundleLabel, contract.TrustBundleLabelValue))
		case err != nil:
			errs = append(errs, fmt.Errorf("publish root %s: %w", name, err))
		default:
			p.Log.Info("published a mesh root", "cluster_trust_bundle", name)
		}
	}
	return errors.Join(errs...)
}

// desiredBundles maps each root of bundlePEM to its ClusterTrustBundle:
// name "<signer, / as :>:<first 16 hex digits of SHA-256 of the DER>", and
// the root as one PEM block.
func desiredBundles(bundlePEM []byte) (map[string]string, error) {
	out := map[string]string{}
	prefix := strings.ReplaceAll(contract.SignerName, "/", ":") + ":"
	for rest := bundlePEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		sum := sha256.Sum256(b.Bytes)
		out[prefix+hex.EncodeToString(sum[:8])] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes}))
	}
	if len(out) == 0 {
		return nil, errors.New("the CA's trust bundle holds no certificate")
	}
	return out, nil
}

// Served reports whether the API server serves what the signer needs:
// certificates.k8s.io/v1 podcertificaterequests and clustertrustbundles
// (Kubernetes >= 1.37; the beta APIs of 1.35 and 1.36 are not used).
func Served(d discovery.DiscoveryInterface) (bool, error) {
	res, err := d.ServerResourcesForGroupVersion(certv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", certv1.SchemeGroupVersion, err)
	}
	var pcr, ctb bool
	for _, r := range res.APIResources {
		pcr = pcr || r.Name == "podcertificaterequests"
		ctb = ctb || r.Name == "clustertrustbundles"
	}
	return pcr && ctb, nil
}
