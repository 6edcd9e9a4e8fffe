package ca

import (
	"context"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/renewal"
)

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, want := renewal.Serving.At(nb, nb.Add(24*time.Hour), 0), nb.Add(16*time.Hour); !got.Equal(want) {
		t.Errorf("RenewAt 24h = %s, want %s", got, want)
	}
	if got, want := renewal.Serving.At(nb, nb.Add(3*time.Second), 0), nb.Add(2*time.Second); !got.Equal(want) {
		t.Errorf("RenewAt 3s = %s, want %s", got, want)
	}
}

// TestServingSourceRenews runs the real renewal loop with 6-second
// certificates: a new certificate must be served before the old one expires.
func TestServingSourceRenews(t *testing.T) {
	m := testMaterial(t)
	a, err := New(m, Config{MinTTL: 6 * time.Second, DefaultTTL: 6 * time.Second, MaxTTL: 6 * time.Second, Backdate: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewServingSource(a, []string{"podtls-controller.podtls-system.svc"}, nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := src.Current().Leaf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	poll.Eventually(t, time.Until(first.NotAfter), "the certificate to be renewed before it expires", func() (bool, string) {
		c, err := src.GetCertificate(nil)
		if err != nil || c == nil {
			t.Fatalf("GetCertificate = %v, %v", c, err)
		}
		if c.Leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return false, "still serving the first certificate"
		}
		if time.Now().Before(renewal.Serving.At(first.NotBefore, first.NotAfter, 0)) {
			t.Error("renewed before two thirds of the lifetime")
		}
		return true, ""
	})
}
