package appcerts

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecar/atomicdir"
)

// meshMaterial is a leaf under an intermediate, with two roots (a rotation).
func meshMaterial(t *testing.T) Material {
	t.Helper()
	root := testpki.NewCA(t, "root")
	inter := root.Intermediate(t, "intermediate")
	leaf := inter.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/app", DNSNames: []string{"app.demo.svc"}})
	next := testpki.NewCA(t, "next root")
	return Material{Chain: []*x509.Certificate{leaf.Cert, inter.Cert}, Key: leaf.Key, Roots: []*x509.Certificate{root.Cert, next.Cert}}
}

func byName(files []atomicdir.File) map[string]atomicdir.File {
	m := map[string]atomicdir.File{}
	for _, f := range files {
		m[f.Name] = f
	}
	return m
}

func TestRenderFormats(t *testing.T) {
	m := meshMaterial(t)
	tests := []struct {
		name    string
		o       Options
		want    []string
		notWant []string
	}{
		{"pem", Options{Formats: []string{"pem"}}, []string{CertFile, KeyFile, CAFile, CombinedFile, FingerprintKey}, []string{KeystoreP12, KeystoreJKS, PasswordFile}},
		{"pkcs12 modern", Options{Formats: []string{"pkcs12"}, Password: "s3cret-pass"}, []string{KeystoreP12, TruststoreP12}, []string{CertFile, KeystoreJKS, PasswordFile}},
		{"pkcs12 legacy", Options{Formats: []string{"pkcs12"}, PKCS12: "legacy", Password: "s3cret-pass"}, []string{KeystoreP12, TruststoreP12}, nil},
		{"jks with generated password", Options{Formats: []string{"jks"}, Password: "0123456789abcdef", WritePassword: true}, []string{KeystoreJKS, TruststoreJKS, PasswordFile}, []string{KeystoreP12}},
		{"external: no roots, no truststores", Options{Formats: []string{"pem", "pkcs12", "jks"}, Password: "s3cret-pass"}, []string{CertFile, KeystoreP12, KeystoreJKS}, []string{CAFile, TruststoreP12, TruststoreJKS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mm := m
			if tt.name == "external: no roots, no truststores" {
				mm.Roots = nil
			}
			files, err := Render(mm, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			got := byName(files)
			for _, n := range tt.want {
				if _, ok := got[n]; !ok {
					t.Errorf("%s missing", n)
				}
			}
			for _, n := range tt.notWant {
				if _, ok := got[n]; ok {
					t.Errorf("%s written", n)
				}
			}
			for _, f := range files {
				secret := f.Name == KeyFile || f.Name == CombinedFile || f.Name == KeystoreP12 || f.Name == KeystoreJKS || f.Name == PasswordFile
				if want := map[bool]uint32{true: SecretMode, false: PublicMode}[secret]; uint32(f.Mode) != want {
					t.Errorf("%s mode %o, want %o", f.Name, f.Mode, want)
				}
			}
			checkDecodes(t, mm, got, tt.o.Password)
		})
	}
}

// checkDecodes reads every store back with the password and checks the
// leaf, the chain, the key and the roots.
func checkDecodes(t *testing.T, m Material, files map[string]atomicdir.File, password string) {
	t.Helper()
	if f, ok := files[CertFile]; ok {
		rest, n := f.Data, 0
		for {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if !bytes.Equal(b.Bytes, m.Chain[n].Raw) {
				t.Fatalf("tls.crt block %d is not chain[%d]", n, n)
			}
			n++
		}
		if n != len(m.Chain) {
			t.Fatalf("tls.crt has %d certificates, want %d", n, len(m.Chain))
		}
	}
	if f, ok := files[KeyFile]; ok {
		b, _ := pem.Decode(f.Data)
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil || !k.(*ecdsa.PrivateKey).Equal(m.Key) {
			t.Fatalf("tls.key: %v", err)
		}
	}
	if f, ok := files[KeystoreP12]; ok {
		key, leaf, cas, err := pkcs12.DecodeChain(f.Data, password)
		if err != nil {
			t.Fatalf("keystore.p12: %v", err)
		}
		if !leaf.Equal(m.Chain[0]) || len(cas) != len(m.Chain)-1 || !key.(*ecdsa.PrivateKey).Equal(m.Key) {
			t.Fatal("keystore.p12 holds another chain or key")
		}
		if _, _, _, err := pkcs12.DecodeChain(f.Data, password+"x"); err == nil {
			t.Fatal("keystore.p12 opens with a wrong password")
		}
	}
	if f, ok := files[TruststoreP12]; ok {
		roots, err := pkcs12.DecodeTrustStore(f.Data, password)
		if err != nil || len(roots) != len(m.Roots) {
			t.Fatalf("truststore.p12: %d roots, %v", len(roots), err)
		}
	}
	if f, ok := files[KeystoreJKS]; ok {
		ks := keystore.New()
		if err := ks.Load(bytes.NewReader(f.Data), []byte(password)); err != nil {
			t.Fatalf("keystore.jks: %v", err)
		}
		e, err := ks.GetPrivateKeyEntry(KeyAlias, []byte(password))
		if err != nil || len(e.CertificateChain) != len(m.Chain) || !bytes.Equal(e.CertificateChain[0].Content, m.Chain[0].Raw) {
			t.Fatalf("keystore.jks entry %q: %v", KeyAlias, err)
		}
	}
	if f, ok := files[TruststoreJKS]; ok {
		ts := keystore.New()
		if err := ts.Load(bytes.NewReader(f.Data), []byte(password)); err != nil {
			t.Fatalf("truststore.jks: %v", err)
		}
		if got := len(ts.Aliases()); got != len(m.Roots) {
			t.Fatalf("truststore.jks has %d entries, want %d", got, len(m.Roots))
		}
	}
	if f, ok := files[PasswordFile]; ok && string(f.Data) != password {
		t.Fatal("store.password differs from the stores' password")
	}
}

func TestFingerprint(t *testing.T) {
	m := meshMaterial(t)
	o := Options{Formats: []string{"pem", "jks"}, Password: "one-password"}
	base := Fingerprint(m, o)
	if Fingerprint(m, o) != base {
		t.Fatal("fingerprint is not stable")
	}
	other := meshMaterial(t)
	changes := map[string]func() string{
		"leaf":     func() string { mm := m; mm.Chain = other.Chain; return Fingerprint(mm, o) },
		"roots":    func() string { mm := m; mm.Roots = m.Roots[:1]; return Fingerprint(mm, o) },
		"password": func() string { oo := o; oo.Password = "two-password"; return Fingerprint(m, oo) },
		"formats":  func() string { oo := o; oo.Formats = []string{"pem"}; return Fingerprint(m, oo) },
		"pkcs12":   func() string { oo := o; oo.PKCS12 = "legacy"; return Fingerprint(m, oo) },
	}
	for name, f := range changes {
		if f() == base {
			t.Errorf("a change of %s keeps the fingerprint", name)
		}
	}
	if bytes.Contains([]byte(base), []byte("one-password")) {
		t.Fatal("fingerprint shows the password")
	}
}

func TestRenderRefusesEmptyMaterial(t *testing.T) {
	if _, err := Render(Material{}, Options{Formats: []string{"pem"}}); err == nil {
		t.Fatal("rendered nothing without an error")
	}
}
