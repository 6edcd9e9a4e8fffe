// Package appcerts delivers the pod's certificates to apps that terminate
// TLS themselves (podtls.io/app-certs): it renders the mesh identity and the
// external certificate as PEM, PKCS#12 and JKS files (render.go, pure),
// writes each source's directory in one atomic swap when its material
// changed (writer.go), and tells the app (reload.go).
package appcerts

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/sidecar/atomicdir"
)

// File names in a source directory. docs/app-certificates.md lists them.
const (
	CertFile       = "tls.crt"        // leaf, then intermediates
	KeyFile        = "tls.key"        // PKCS#8
	CAFile         = "ca.crt"         // trusted roots (mesh only)
	CombinedFile   = "combined.pem"   // chain, then key (HAProxy, some Java and Python servers)
	KeystoreP12    = "keystore.p12"   // key and chain, alias KeyAlias
	TruststoreP12  = "truststore.p12" // roots as trusted certificate entries (mesh only)
	KeystoreJKS    = "keystore.jks"
	TruststoreJKS  = "truststore.jks"
	PasswordFile   = "store.password" // the generated password of the stores
	FingerprintKey = ".fingerprint"   // what the files were rendered from, never secret
	// KeyAlias is the alias of the key entry in both keystores; truststore
	// entries are "root-0", "root-1", ...
	KeyAlias = "podtls"
)

// File modes: the key material is readable by the owner and the pod's
// fsGroup (the app's containers), certificates by everyone in the pod.
const (
	PublicMode = 0o644
	SecretMode = 0o640
)

// Material is what one source's files are rendered from.
type Material struct {
	Chain []*x509.Certificate // leaf first
	Key   crypto.PrivateKey
	Roots []*x509.Certificate // none for external certificates
}

// Options shape the rendering: which formats, the PKCS#12 encryption, the
// stores' password and, when it was generated, whether to write it.
type Options struct {
	Formats       []string
	PKCS12        string // contract.PKCS12Legacy, or modern
	Password      string
	WritePassword bool
	Rand          io.Reader // nil: crypto/rand
}

// Fingerprint identifies what Render would produce: the certificates, the
// public key, the formats and a hash of the password. Equal fingerprints
// mean the files need not be written again (PKCS#12 salts make the bytes
// differ on every rendering).
func Fingerprint(m Material, o Options) string {
	h := sha256.New()
	for _, group := range [][]*x509.Certificate{m.Chain, {nil}, m.Roots} {
		for _, c := range group {
			if c != nil {
				h.Write(c.Raw)
			}
			h.Write([]byte{0})
		}
	}
	pw := sha256.Sum256([]byte(o.Password))
	fmt.Fprintf(h, "%s|%s|%x|%t", strings.Join(o.Formats, ","), o.PKCS12, pw, o.WritePassword)
	return hex.EncodeToString(h.Sum(nil))
}

// Render returns the files of one source directory.
func Render(m Material, o Options) ([]atomicdir.File, error) {
	if len(m.Chain) == 0 || m.Key == nil {
		return nil, errors.New("no certificate and key to render")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(m.Key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	var files []atomicdir.File
	add := func(name string, data []byte, mode os.FileMode) {
		files = append(files, atomicdir.File{Name: name, Data: data, Mode: mode})
	}
	chainPEM := encodeCerts(m.Chain)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if slices.Contains(o.Formats, contract.FormatPEM) {
		add(CertFile, chainPEM, PublicMode)
		add(KeyFile, keyPEM, SecretMode)
		add(CombinedFile, slices.Concat(chainPEM, keyPEM), SecretMode)
		if len(m.Roots) > 0 {
			add(CAFile, encodeCerts(m.Roots), PublicMode)
		}
	}
	if slices.Contains(o.Formats, contract.FormatPKCS12) {
		enc := pkcs12.Modern2023
		if o.PKCS12 == contract.PKCS12Legacy {
			enc = pkcs12.LegacyDES
		}
		if o.Rand != nil {
			enc = enc.WithRand(o.Rand)
		}
		ks, err := enc.Encode(m.Key, m.Chain[0], m.Chain[1:], o.Password)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", KeystoreP12, err)
		}
		add(KeystoreP12, ks, SecretMode)
		if len(m.Roots) > 0 {
			entries := make([]pkcs12.TrustStoreEntry, len(m.Roots))
			for i, r := range m.Roots {
				entries[i] = pkcs12.TrustStoreEntry{Cert: r, FriendlyName: rootAlias(i)}
			}
			ts, err := enc.EncodeTrustStoreEntries(entries, o.Password)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", TruststoreP12, err)
			}
			add(TruststoreP12, ts, PublicMode)
		}
	}
	if slices.Contains(o.Formats, contract.FormatJKS) {
		ks, ts, err := encodeJKS(m, keyDER, o)
		if err != nil {
			return nil, err
		}
		add(KeystoreJKS, ks, SecretMode)
		if ts != nil {
			add(TruststoreJKS, ts, PublicMode)
		}
	}
	if o.WritePassword && (slices.Contains(o.Formats, contract.FormatPKCS12) || slices.Contains(o.Formats, contract.FormatJKS)) {
		add(PasswordFile, []byte(o.Password), SecretMode)
	}
	add(FingerprintKey, []byte(Fingerprint(m, o)), PublicMode)
	return files, nil
}

// encodeJKS returns the JKS keystore and, with roots, truststore. Entry
// times are the certificates' NotBefore, so equal input gives equal stores.
func encodeJKS(m Material, keyDER []byte, o Options) (ks, ts []byte, err error) {
	chain := make([]keystore.Certificate, len(m.Chain))
	for i, c := range m.Chain {
		chain[i] = keystore.Certificate{Type: "X509", Content: c.Raw}
	}
	var opts []keystore.Option
	if o.Rand != nil {
		opts = append(opts, keystore.WithCustomRandomNumberGenerator(o.Rand))
	}
	store := keystore.New(opts...)
	if err := store.SetPrivateKeyEntry(KeyAlias, keystore.PrivateKeyEntry{
		CreationTime: m.Chain[0].NotBefore, PrivateKey: keyDER, CertificateChain: chain,
	}, []byte(o.Password)); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", KeystoreJKS, err)
	}
	var buf bytes.Buffer
	if err := store.Store(&buf, []byte(o.Password)); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", KeystoreJKS, err)
	}
	ks = bytes.Clone(buf.Bytes())
	if len(m.Roots) == 0 {
		return ks, nil, nil
	}
	trust := keystore.New(keystore.WithOrderedAliases())
	for i, c := range m.Roots {
		if err := trust.SetTrustedCertificateEntry(rootAlias(i), keystore.TrustedCertificateEntry{
			CreationTime: c.NotBefore, Certificate: keystore.Certificate{Type: "X509", Content: c.Raw},
		}); err != nil {
			return nil, nil, fmt.Errorf("encode %s: %w", TruststoreJKS, err)
		}
	}
	buf.Reset()
	if err := trust.Store(&buf, []byte(o.Password)); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", TruststoreJKS, err)
	}
	return ks, bytes.Clone(buf.Bytes()), nil
}

func rootAlias(i int) string { return fmt.Sprintf("root-%d", i) }

func encodeCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
