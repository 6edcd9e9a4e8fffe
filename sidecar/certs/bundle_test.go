package certs

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

func TestSplitCredentialBundle(t *testing.T) {
	ca := testpki.NewCA(t, "mesh root")
	l := ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	other := ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	key, chain := string(l.KeyPEM), string(l.ChainPEM)
	for _, tc := range []struct {
		name, data, wantErr string
	}{
		{"kubelet order: key, then chain", key + chain, ""},
		{"chain, then key", chain + key, ""},
		{"two keys", key + string(other.KeyPEM) + chain, "2 private key blocks"},
		{"no key", chain, "0 private key blocks"},
		{"no certificate", key, "no CERTIFICATE block"},
		{"a CSR inside", key + chain + "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", `unexpected PEM block "CERTIFICATE REQUEST"`},
		{"truncated", key + chain[:len(chain)/2], "truncated"},
		{"empty", "", "0 private key blocks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM, err := SplitCredentialBundle([]byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), strings.Split(key, "\n")[1]) {
					t.Fatal("the error quotes the key")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pair, err := ParseKeyPair(certPEM, keyPEM)
			if err != nil || !pair.Leaf.Equal(l.Cert) {
				t.Fatalf("split bundle does not make the pair: %v", err)
			}
		})
	}
}

// TestCredentialBundleStore serves the mesh certificate from one
// credential-bundle file that a kubelet swaps, and keeps the current one
// when a swap brings a key that does not match its chain.
func TestCredentialBundleStore(t *testing.T) {
	var bundle string
	f := newFixture(t, func(o *Options) {
		bundle = filepath.Join(o.CertDir, "credentials.pem")
		o.CredentialBundle, o.CertDir = bundle, ""
	})
	write := func(key, chain []byte) {
		testpki.KubeletWrite(t, f.dir, map[string][]byte{"credentials.pem": append(append([]byte{}, key...), chain...)})
	}
	first := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	write(first.KeyPEM, first.ChainPEM)
	if err := f.store.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.serial(), first.Cert.SerialNumber.Text(16); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}
	go f.store.Run(t.Context())
	f.waitWatching(t, f.dir)
	var last string
	for i := range 3 {
		l := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
		write(l.KeyPEM, l.ChainPEM)
		last = l.Cert.SerialNumber.Text(16)
		poll.Eventually(t, 2*time.Second, fmt.Sprintf("swap %d: serial %s", i, last), func() (bool, string) {
			return f.serial() == last, "serving " + f.serial()
		})
	}
	a, b := f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}), f.ca.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})
	write(a.KeyPEM, b.ChainPEM)
	poll.Eventually(t, 2*time.Second, "the mismatched bundle refused", func() (bool, string) {
		return f.logged("invalid mesh certificate, keeping the current one", bundle), f.logs.String()
	})
	if f.serial() != last {
		t.Fatalf("serving %s after a bad bundle, want the last good %s", f.serial(), last)
	}
}
