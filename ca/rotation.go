package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.step.sm/crypto/keyutil"
	corev1 "k8s.io/api/core/v1"
)

// KeyNextRootKey holds the key of the next root between the publish and the
// switch step of a root rotation (RotationPublish, RotationSwitch).
const KeyNextRootKey = "next-root.key"

// Phases of a root rotation, read from the CA Secret (ReadRotation).
const (
	// PhaseIdle: one set of roots, all signing.
	PhaseIdle = "idle"
	// PhasePublished: the next root is published beside the current one
	// (ca-bundle.crt) and its key waits in next-root.key; the old root
	// still signs.
	PhasePublished = "published"
	// PhaseSwitched: the new root signs through a new intermediate; the old
	// root is still published, so leaves of the old chain keep verifying.
	PhaseSwitched = "switched"
)

// Rotation is where a root rotation stands.
type Rotation struct {
	Phase string
	// Intermediate signs leaves now; Signing are the roots it chains to.
	Intermediate *x509.Certificate
	Signing      []*x509.Certificate
	// Next is the published root waiting for the switch (PhasePublished).
	Next *x509.Certificate
	// Retiring are published roots nothing signs with any more
	// (PhaseSwitched): trusted until RotationRetire.
	Retiring []*x509.Certificate
}

// ReadRotation reads the rotation state of CA Secret data.
func ReadRotation(data map[string][]byte) (Rotation, error) {
	m, err := materialOf(data)
	if err != nil {
		return Rotation{}, err
	}
	r := Rotation{Phase: PhaseIdle, Intermediate: m.Intermediate, Signing: m.Roots}
	var nextKey crypto.Signer
	if len(data[KeyNextRootKey]) > 0 {
		if nextKey, err = parseSigner(KeyNextRootKey, data[KeyNextRootKey]); err != nil {
			return Rotation{}, err
		}
	}
	for _, c := range m.ExtraRoots {
		if nextKey != nil && r.Next == nil && keyutil.VerifyPair(c.PublicKey, nextKey) == nil {
			r.Next = c
			continue
		}
		r.Retiring = append(r.Retiring, c)
	}
	switch {
	case nextKey != nil && r.Next == nil:
		return Rotation{}, fmt.Errorf("%s holds a key but no root of %s matches it", KeyNextRootKey, KeyExtraRoots)
	case r.Next != nil:
		r.Phase = PhasePublished
	case len(r.Retiring) > 0:
		r.Phase = PhaseSwitched
	}
	return r, nil
}

// RotationPublish is the first step of a root rotation: a new root
// (ECDSA P-256, RootLifetime) is added to ca-bundle.crt, published in every
// trust bundle while the current root keeps signing, and its key is kept in
// next-root.key for RotationSwitch. It needs a CA podtls generated (its root
// key in the Secret) and no rotation in progress. It returns the new data
// and the new root.
func RotationPublish(data map[string][]byte, now time.Time) (map[string][]byte, *x509.Certificate, error) {
	r, err := ReadRotation(data)
	if err != nil {
		return nil, nil, err
	}
	if r.Phase != PhaseIdle {
		return nil, nil, fmt.Errorf("a rotation is in progress (phase %s): finish it first", r.Phase)
	}
	if len(data[KeyRootKey]) == 0 {
		return nil, nil, errors.New("the CA Secret holds no root key (a CA you brought): publish your next root in ca-bundle.crt and switch to an intermediate of it yourself (docs/operations.md)")
	}
	root, key, err := generateRoot(now, Backdate)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	out := maps.Clone(data)
	out[KeyExtraRoots] = rootsPEM([]*x509.Certificate{root})
	out[KeyNextRootKey] = keyPEM
	return out, root, nil
}

// RotationSwitch is the second step: a new intermediate of the next root
// signs from now on; the next root becomes ca.crt (with its key in
// root.key) and the old roots move to ca-bundle.crt, still trusted.
func RotationSwitch(data map[string][]byte, now time.Time) (map[string][]byte, error) {
	r, err := ReadRotation(data)
	if err != nil {
		return nil, err
	}
	if r.Phase != PhasePublished {
		return nil, fmt.Errorf("nothing to switch to (phase %s): publish a next root first", r.Phase)
	}
	nextKey, err := parseSigner(KeyNextRootKey, data[KeyNextRootKey])
	if err != nil {
		return nil, err
	}
	m := &Material{Roots: []*x509.Certificate{r.Next}, RootKey: nextKey, ExtraRoots: append(r.Signing, r.Retiring...)}
	if err := m.RenewIntermediate(now, Backdate); err != nil {
		return nil, err
	}
	if err := m.Validate(now); err != nil {
		return nil, err
	}
	fresh, err := secretData(m)
	if err != nil {
		return nil, err
	}
	out := maps.Clone(data)
	maps.Copy(out, fresh)
	out[KeyExtraRoots] = rootsPEM(m.ExtraRoots)
	delete(out, KeyNextRootKey)
	return out, nil
}

// RotationRetire is the last step: the roots nothing signs with any more
// are removed from ca-bundle.crt, so workloads stop trusting them. It
// returns them.
func RotationRetire(data map[string][]byte) (map[string][]byte, []*x509.Certificate, error) {
	r, err := ReadRotation(data)
	if err != nil {
		return nil, nil, err
	}
	if r.Phase != PhaseSwitched {
		return nil, nil, fmt.Errorf("nothing to retire (phase %s)", r.Phase)
	}
	out := maps.Clone(data)
	delete(out, KeyExtraRoots)
	return out, r.Retiring, nil
}

// materialOf parses CA Secret data.
func materialOf(data map[string][]byte) (*Material, error) {
	return MaterialFromSecret(&corev1.Secret{Data: data})
}
