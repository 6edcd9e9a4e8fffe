package acmetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// writeTLS creates a throwaway CA and a certificate for Pebble's HTTPS
// endpoints valid for ListenIP, 127.0.0.1 and localhost (Pebble's bundled
// minica certificate only covers loopback, and the demo runs Pebble on a
// namespace address).
func (e *Env) writeTLS() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("acmetest: tls ca key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "podtls acmetest HTTPS CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("acmetest: tls ca: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("acmetest: tls ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("acmetest: tls key: %w", err)
	}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	if ip := net.ParseIP(e.opts.ListenIP); !ip.IsLoopback() {
		ips = append(ips, ip)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		DNSNames: []string{"localhost", "pebble"}, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("acmetest: tls cert: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("acmetest: tls key: %w", err)
	}
	if err := os.MkdirAll(e.path("acme"), 0o700); err != nil {
		return fmt.Errorf("acmetest: %w", err)
	}
	e.tlsCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"acme/https-ca.pem":   e.tlsCA,
		"acme/https-cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		"acme/https-key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(e.path(name), b, 0o600); err != nil {
			return fmt.Errorf("acmetest: write %s: %w", name, err)
		}
	}
	return nil
}

func (e *Env) writePebbleConfig() error {
	type profile struct {
		Description    string `json:"description"`
		ValidityPeriod int    `json:"validityPeriod"`
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           net.JoinHostPort(e.opts.ListenIP, strconv.Itoa(e.pebblePort)),
		"managementListenAddress": net.JoinHostPort(e.opts.ListenIP, strconv.Itoa(e.opts.MgmtPort)),
		"certificate":             e.path("acme/https-cert.pem"),
		"privateKey":              e.path("acme/https-key.pem"),
		// Only DNS-01 is used; these ports are never dialled.
		"httpPort": 5002, "tlsPort": 5001,
		"externalAccountBindingRequired": len(e.opts.EAB) > 0,
		"externalAccountMACKeys":         e.opts.EAB,
		"keyAlgorithm":                   "ecdsa",
		// No Retry-After: clients poll at their own pace (fast in tests).
		"retryAfter": map[string]int{"authz": 0, "order": 0},
		"profiles": map[string]profile{
			"default":    {"90-day certificates", 90 * 24 * 3600},
			"shortlived": {"6-day certificates", 6 * 24 * 3600},
		},
	}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("acmetest: pebble config: %w", err)
	}
	if err := os.WriteFile(e.path("acme/pebble-config.json"), b, 0o600); err != nil {
		return fmt.Errorf("acmetest: write pebble config: %w", err)
	}
	return nil
}

// StartACME starts Pebble (again) and waits until its directory and
// management endpoints answer. Each start makes a new root and forgets all
// accounts, orders and certificates.
func (e *Env) StartACME(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.acme != nil && e.acme.exited() == nil {
		return errors.New("acmetest: ACME server already running")
	}
	env := []string{
		"PEBBLE_VA_NOSLEEP=1",      // validate at once, not after a random sleep
		"PEBBLE_WFE_NONCEREJECT=0", // no random badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order validates DNS again
	}
	p, err := e.startProcess("pebble", "pebble.log", env, e.pebbleBin,
		"-config", e.path("acme/pebble-config.json"), "-dnsserver", e.DNSAddr)
	if err != nil {
		return err
	}
	e.acme = p
	if e.opts.ChallengeDelay > 0 {
		if e.proxy, err = e.startProxy(); err != nil {
			p.stop()
			e.acme = nil
			return err
		}
	}
	if err := e.waitReady(ctx, p, func(ctx context.Context) error {
		if _, err := e.get(ctx, e.DirectoryURL); err != nil {
			return err
		}
		_, err := e.get(ctx, e.ManagementURL+"/roots/0")
		return err
	}); err != nil {
		p.stop()
		e.acme = nil
		if e.proxy != nil {
			e.proxy.stop()
			e.proxy = nil
		}
		return err
	}
	return nil
}

// StopACME stops Pebble; its state is gone (see StartACME).
func (e *Env) StopACME() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proxy != nil {
		e.proxy.stop()
		e.proxy = nil
	}
	if e.acme != nil {
		e.acme.stop()
		e.acme = nil
	}
	e.http.CloseIdleConnections()
}

// Roots returns PEM of Pebble's current root followed by its intermediate:
// what a client verifies leaves against. It changes with every StartACME.
func (e *Env) Roots(ctx context.Context) ([]byte, error) {
	roots, inter, err := e.Chain(ctx)
	if err != nil {
		return nil, err
	}
	return append(roots, inter...), nil
}

// Chain returns Pebble's current root and intermediate certificates as PEM,
// separately (for `openssl verify -CAfile ROOT -untrusted INTERMEDIATE`).
func (e *Env) Chain(ctx context.Context) (roots, intermediates []byte, err error) {
	if roots, err = e.get(ctx, e.ManagementURL+"/roots/0"); err != nil {
		return nil, nil, err
	}
	if intermediates, err = e.get(ctx, e.ManagementURL+"/intermediates/0"); err != nil {
		return nil, nil, err
	}
	return roots, intermediates, nil
}

// SetRenewalInfo makes Pebble's ARI endpoint suggest the window
// [start, end) for the certificate (the leaf is the first PEM block of
// certPEM), so a client renews it when the window has begun.
func (e *Env) SetRenewalInfo(ctx context.Context, certPEM []byte, start, end time.Time) error {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return errors.New("acmetest: set renewal info: no certificate PEM")
	}
	ari, err := json.Marshal(map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
	if err != nil {
		return fmt.Errorf("acmetest: set renewal info: %w", err)
	}
	body, err := json.Marshal(map[string]string{
		"Certificate": string(pem.EncodeToMemory(block)), "ARIResponse": string(ari)})
	if err != nil {
		return fmt.Errorf("acmetest: set renewal info: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ManagementURL+"/set-renewal-info/", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("acmetest: set renewal info: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("acmetest: set renewal info: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("acmetest: set renewal info: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

func (e *Env) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("acmetest: GET %s: %w", url, err)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("acmetest: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("acmetest: GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("acmetest: GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// eabKeys checks the EAB option and returns a copy in Pebble's form
// (unpadded base64url). The error names key IDs, never keys.
func eabKeys(in map[string]string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	for kid, key := range in {
		if kid == "" {
			return nil, errors.New("acmetest: EAB: empty key ID")
		}
		key = strings.TrimRight(key, "=")
		if b, err := base64.RawURLEncoding.DecodeString(key); err != nil || len(b) == 0 {
			return nil, fmt.Errorf("acmetest: EAB: key of key ID %q is not non-empty base64url", kid)
		}
		out[kid] = key
	}
	return out, nil
}
