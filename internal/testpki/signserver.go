package testpki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podtls/podtls/ca/signapi"
)

// SignServer is an HTTPS server implementing the CA's POST /v1/sign contract
// with real x509 signing, for agent tests.
type SignServer struct {
	*httptest.Server
	CA       *CA
	SPIFFEID string

	mu     sync.Mutex
	tokens []string
	fail   int    // status to answer with instead of signing; 0 signs
	wrong  bool   // sign a different key than the CSR's
	header string // Retry-After to send with fail
}

// NewSignServer starts the server; it trusts any non-empty bearer token and
// issues leaves for id with the CSR's DNS names and requested TTL.
func NewSignServer(t testing.TB, ca *CA, id string) *SignServer {
	s := &SignServer{CA: ca, SPIFFEID: id}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

// RootPEM is the PEM of the server's own HTTPS certificate, to trust it.
func (s *SignServer) RootPEM() []byte { return CertPEM(s.Certificate()) }

// Tokens returns the bearer tokens received so far.
func (s *SignServer) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// Fail makes the server answer status (0 restores signing).
func (s *SignServer) Fail(status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.header = status, retryAfter
}

// SignWrongKey makes the server return a certificate for another key.
func (s *SignServer) SignWrongKey(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wrong = v
}

func (s *SignServer) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.tokens = append(s.tokens, tok)
	fail, retry, wrong := s.fail, s.header, s.wrong
	s.mu.Unlock()
	writeErr := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(signapi.Error{Message: msg})
	}
	if fail != 0 {
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		writeErr(fail, "configured failure")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != signapi.SignPath {
		writeErr(http.StatusNotFound, "not found")
		return
	}
	if tok == "" {
		writeErr(http.StatusUnauthorized, "missing bearer token")
		return
	}
	var req signapi.SignRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, signapi.MaxRequestBytes)).Decode(&req); err != nil {
		writeErr(http.StatusBadRequest, err.Error())
		return
	}
	chain, notAfter, err := s.sign(req, wrong)
	if err != nil {
		writeErr(http.StatusBadRequest, err.Error())
		return
	}
	_ = json.NewEncoder(w).Encode(signapi.SignResponse{
		CertificateChain: string(chain), TrustBundle: string(s.CA.RootPEM()), NotAfter: notAfter.UTC().Format(time.RFC3339),
	})
}

func (s *SignServer) sign(req signapi.SignRequest, wrongKey bool) ([]byte, time.Time, error) {
	b, _ := pem.Decode([]byte(req.CSR))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, time.Time{}, errors.New("csr: want a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, time.Time{}, err
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return nil, time.Time{}, err
		}
	}
	u, _ := url.Parse(s.SPIFFEID)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), NotBefore: now.Add(-time.Second), NotAfter: now.Add(ttl),
		DNSNames: csr.DNSNames, URIs: []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	pub := csr.PublicKey
	if wrongKey {
		pub = newKeyE().Public()
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.CA.Cert, pub, s.CA.Key)
	if err != nil {
		return nil, time.Time{}, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range s.CA.Chain {
		out = append(out, CertPEM(c)...)
	}
	return out, tmpl.NotAfter, nil
}
