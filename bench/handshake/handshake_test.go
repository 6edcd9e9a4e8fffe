package handshake

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/bench/pki"
)

// server starts a real Go TLS server that requires a client certificate
// (when mtls) and answers 200, and returns its address.
func server(t *testing.T, set *pki.Set, mtls bool, roots *x509.CertPool) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(set.Server.Cert, set.Server.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}
	if mtls {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = roots
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

func fixture(t *testing.T) (*pki.Set, *x509.CertPool, *tls.Certificate) {
	t.Helper()
	set, err := pki.Write(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(set.Root)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client, err := tls.LoadX509KeyPair(set.Client.Cert, set.Client.Key)
	if err != nil {
		t.Fatal(err)
	}
	return set, roots, &client
}

func TestRunCountsFullHandshakes(t *testing.T) {
	set, roots, client := fixture(t)
	for _, mtls := range []bool{false, true} {
		addr := server(t, set, mtls, roots)
		cfg := Config{Addr: addr, ServerName: pki.ServerName, Roots: roots, Workers: 2, Duration: 300 * time.Millisecond}
		if mtls {
			cfg.ClientCert = client
		}
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("mtls=%v: %v", mtls, err)
		}
		if res.Conns == 0 || res.Errors != 0 || res.Resumed != 0 {
			t.Fatalf("mtls=%v: %+v, want connections, no errors, no resumption", mtls, res)
		}
		if res.PerSecond() <= 0 {
			t.Fatalf("rate %v", res.PerSecond())
		}
	}
}

func TestRunProbeFailures(t *testing.T) {
	set, roots, client := fixture(t)
	other, _, _ := fixture(t) // a second, unrelated PKI
	otherPEM, err := os.ReadFile(other.Root)
	if err != nil {
		t.Fatal(err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AppendCertsFromPEM(otherPEM)
	mtlsAddr := server(t, set, true, roots)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong roots", Config{Addr: mtlsAddr, ServerName: pki.ServerName, Roots: otherRoots, ClientCert: client}, "certificate"},
		{"wrong name", Config{Addr: mtlsAddr, ServerName: pki.EdgeName, Roots: roots, ClientCert: client}, "certificate"},
		{"no client certificate", Config{Addr: mtlsAddr, ServerName: pki.ServerName, Roots: roots}, "probe"},
		{"nothing listening", Config{Addr: closedAddr(t), ServerName: pki.ServerName, Roots: roots}, "dial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Workers, tt.cfg.Duration = 1, 100*time.Millisecond
			_, err := Run(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := Run(context.Background(), Config{Workers: 0, Duration: time.Second}); err == nil {
		t.Fatal("zero workers accepted")
	}
}

func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}
