package reconciler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/acme/status"
)

// export sets the expiry gauge from the stored leaf.
func (m *Manager) export(key types.NamespacedName, leaf *x509.Certificate) {
	if leaf == nil {
		expiry.DeleteLabelValues(key.Namespace, key.Name)
		return
	}
	expiry.WithLabelValues(key.Namespace, key.Name).Set(float64(leaf.NotAfter.Unix()))
}

// writeStatus updates the Secret when the status changed.
func (m *Manager) writeStatus(ctx context.Context, sec *corev1.Secret, orig, ext status.External) error {
	if fmt.Sprint(orig.Encode(nil)) == fmt.Sprint(ext.Encode(nil)) {
		return nil
	}
	return m.update(ctx, sec, ext)
}

// update writes sec with the status ext, guarded by its resourceVersion.
func (m *Manager) update(ctx context.Context, sec *corev1.Secret, ext status.External) error {
	sec.Annotations = ext.Encode(sec.Annotations)
	if err := m.client.Update(ctx, sec); err != nil {
		return fmt.Errorf("update secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return nil
}

// parseLeaf returns the first certificate of a PEM chain, or nil.
func parseLeaf(chain []byte) *x509.Certificate {
	block, _ := pem.Decode(chain)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return leaf
}

// validPair reports whether crt and key form a usable pair.
func validPair(crt, key []byte) bool {
	_, err := tls.X509KeyPair(crt, key)
	return err == nil
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// shortError makes err fit a status annotation or an Event: one line, at
// most 512 bytes. Issuer errors name hosts and servers, never credentials.
func shortError(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 512 {
		s = s[:509] + "..."
	}
	return s
}
