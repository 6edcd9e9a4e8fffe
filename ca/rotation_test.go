package ca

import (
	"crypto/x509"
	"maps"
	"strings"
	"testing"
	"time"
)

// TestRotation walks a root rotation on CA Secret data: publish, switch,
// retire. Leaves of the old chain keep verifying until the retire step, new
// leaves chain to the new root from the switch, and each step refuses to run
// out of order.
func TestRotation(t *testing.T) {
	now := testNow
	m, err := Generate(now.Add(-time.Hour), Backdate)
	if err != nil {
		t.Fatal(err)
	}
	data, err := secretData(m)
	if err != nil {
		t.Fatal(err)
	}
	phase := func(d map[string][]byte) Rotation {
		t.Helper()
		r, err := ReadRotation(d)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	authority := func(d map[string][]byte) *Authority {
		t.Helper()
		mat, err := materialOf(d)
		if err != nil {
			t.Fatal(err)
		}
		a, err := New(mat, Config{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	verifies := func(leaf *Issued, a *Authority) bool {
		inter := x509.NewCertPool()
		rest, _ := parseCerts("chain", leaf.ChainPEM)
		for _, c := range rest[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Certificate.Verify(x509.VerifyOptions{Roots: a.TrustPool(), Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}
	caller := Caller{Namespace: "demo", ServiceAccount: "web"}
	oldLeaf, err := authority(data).Sign(t.Context(), caller, makeCSR(t, csrSpec{}), 0)
	if err != nil {
		t.Fatal(err)
	}
	if r := phase(data); r.Phase != PhaseIdle {
		t.Fatalf("fresh CA in phase %s", r.Phase)
	}
	if _, err := RotationSwitch(data, now); err == nil || !strings.Contains(err.Error(), "publish a next root first") {
		t.Fatalf("switch before publish: %v", err)
	}
	if _, _, err := RotationRetire(data); err == nil {
		t.Fatal("retire with nothing to retire succeeded")
	}

	published, next, err := RotationPublish(data, now)
	if err != nil {
		t.Fatal(err)
	}
	r := phase(published)
	if r.Phase != PhasePublished || !r.Next.Equal(next) || !r.Intermediate.Equal(m.Intermediate) {
		t.Fatalf("after publish: %+v", r)
	}
	if a := authority(published); !strings.Contains(string(a.TrustBundlePEM()), string(rootsPEM([]*x509.Certificate{next}))) || !verifies(oldLeaf, a) {
		t.Fatal("after publish the bundle lacks the next root or the old leaf no longer verifies")
	}
	if _, _, err := RotationPublish(published, now); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Fatalf("second publish: %v", err)
	}

	switched, err := RotationSwitch(published, now)
	if err != nil {
		t.Fatal(err)
	}
	r = phase(switched)
	if r.Phase != PhaseSwitched || !r.Signing[0].Equal(next) || r.Intermediate.Equal(m.Intermediate) || len(r.Retiring) != 1 || !r.Retiring[0].Equal(m.Roots[0]) {
		t.Fatalf("after switch: %+v", r)
	}
	if _, ok := switched[KeyNextRootKey]; ok {
		t.Error("next-root.key left after the switch")
	}
	a := authority(switched)
	newLeaf, err := a.Sign(t.Context(), caller, makeCSR(t, csrSpec{}), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !verifies(oldLeaf, a) || !verifies(newLeaf, a) {
		t.Fatal("after the switch old and new leaves must both verify")
	}
	if newLeaf.Certificate.CheckSignatureFrom(r.Intermediate) != nil {
		t.Fatal("new leaves are not signed by the new intermediate")
	}

	retired, gone, err := RotationRetire(switched)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || !gone[0].Equal(m.Roots[0]) || phase(retired).Phase != PhaseIdle {
		t.Fatalf("retire removed %d roots, phase %s", len(gone), phase(retired).Phase)
	}
	if a := authority(retired); verifies(oldLeaf, a) || !verifies(newLeaf, a) {
		t.Fatal("after retiring, only leaves of the new chain may verify")
	}

	byo := maps.Clone(data)
	delete(byo, KeyRootKey)
	if _, _, err := RotationPublish(byo, now); err == nil || !strings.Contains(err.Error(), "no root key") {
		t.Fatalf("publish on a brought CA: %v", err)
	}
}
