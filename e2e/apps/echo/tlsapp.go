package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// tlsServe is an app that terminates TLS itself with files podtls delivers
// (podtls.io/app-certs): it reads its certificate and the roots from disk on
// every handshake (so renewals need no reload action), optionally requires
// a client certificate of one SPIFFE ID, and answers "/" with its name, its
// serving serial and the caller's ID, after calling its upstream with mTLS
// when it has one.
//
//	echo tls-serve -addr :8443 -cert-dir /etc/tls/mesh [-client-ca F -allow ID]
//	               [-upstream URL -upstream-cert-dir D -upstream-ca F -upstream-id ID] -name NAME
func tlsServe(args []string) error {
	fs := flag.NewFlagSet("tls-serve", flag.ContinueOnError)
	addr := fs.String("addr", ":8443", "listen address")
	certDir := fs.String("cert-dir", "", "directory with tls.crt and tls.key to serve")
	clientCA := fs.String("client-ca", "", "PEM roots client certificates must chain to; empty: no client certificate asked")
	allow := fs.String("allow", "", "the only SPIFFE ID (URI SAN) a client certificate may carry; empty: any that verifies")
	name := fs.String("name", "app", "name in the answers")
	upstream := fs.String("upstream", "", "https URL to call on every request to /")
	upCertDir := fs.String("upstream-cert-dir", "", "client certificate for the upstream")
	upCA := fs.String("upstream-ca", "", "PEM roots the upstream must chain to")
	upID := fs.String("upstream-id", "", "SPIFFE ID the upstream's certificate must carry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *certDir == "" {
		return errors.New("tls-serve: -cert-dir is required")
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return loadPair(*certDir) },
	}
	if *clientCA != "" {
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyPeer(cs, *clientCA, "", *allow, x509.ExtKeyUsageClientAuth)
		}
	}
	var client *http.Client
	if *upstream != "" {
		client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion:           tls.VersionTLS12,
			InsecureSkipVerify:   true, // verified below against the current roots, name and ID
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return loadPair(*upCertDir) },
			VerifyConnection: func(cs tls.ConnectionState) error {
				return verifyPeer(cs, *upCA, cs.ServerName, *upID, x509.ExtKeyUsageServerAuth)
			},
		}, DisableKeepAlives: true}}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		peer := "-"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			peer = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		serial := "?"
		if c, err := loadPair(*certDir); err == nil {
			serial = c.Leaf.SerialNumber.Text(16)
		}
		line := fmt.Sprintf("%s serial=%s peer=%s", *name, serial, peer)
		if client != nil {
			resp, err := client.Get(*upstream)
			if err != nil {
				http.Error(w, line+" -> "+err.Error(), http.StatusBadGateway)
				return
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				http.Error(w, fmt.Sprintf("%s -> %s: %s", line, resp.Status, body), http.StatusBadGateway)
				return
			}
			line += " -> " + string(body)
		} else {
			line += "\n"
		}
		fmt.Fprint(w, line)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServeTLS("", "")
}

// loadPair reads tls.crt and tls.key; a read that straddles an atomic
// update (a new certificate with the old key) is retried.
func loadPair(dir string) (*tls.Certificate, error) {
	var err error
	for range 3 {
		var c tls.Certificate
		c, err = tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err == nil {
			return &c, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, err
}

// verifyPeer verifies the peer's chain against the roots in caFile (read
// now, so a rotation's new roots count at once), its name when given and
// its SPIFFE ID when given.
func verifyPeer(cs tls.ConnectionState, caFile, name, id string, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no roots in %s", caFile)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return err
	}
	if id != "" && (len(leaf.URIs) != 1 || leaf.URIs[0].String() != id) {
		return fmt.Errorf("peer identity %v is not %s", leaf.URIs, id)
	}
	return nil
}
