// Package acmetest runs a real ACME test environment for end-to-end tests and
// the demo: BIND9 as the authoritative DNS server of one zone, updatable by
// RFC 2136 with a TSIG key (hmac-sha256), and Pebble (the ACME test server of
// Let's Encrypt) resolving DNS-01 challenges against it. Both listen on
// ListenIP (loopback by default) and run as child processes that die with
// the test.
//
// Assets: named and nsupdate from Debian's bind9 and bind9-dnsutils, and
// bin/tools/pebble under the repository root; `make acme-assets`
// (hack/acme-deps.sh) installs them. StartT skips a test when they are
// missing, or fails it when PODTLS_REQUIRE_ACME is set.
//
// Pebble keeps everything in memory: StopACME followed by StartACME gives a
// server with a NEW root and intermediate and no accounts or orders, so fetch
// Roots again afterwards and expect clients to register again. StartDNS
// writes the zone afresh from the records added by AddRecord (challenge TXT
// records do not survive a restart, as with any fresh server).
package acmetest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/gobuild"
)

// RequireEnv makes StartT fail instead of skip when the assets are missing (CI sets it).
const RequireEnv = "PODTLS_REQUIRE_ACME"

// PebbleEnv overrides the path of the pebble binary (default bin/tools/pebble
// under the repository root).
const PebbleEnv = "PODTLS_PEBBLE"

// ErrAssetsMissing is wrapped by Start when named, nsupdate or pebble is not installed.
var ErrAssetsMissing = errors.New("acmetest: assets missing (run `make acme-assets` or hack/acme-deps.sh as root)")

// Options configure Start. Zero values take the documented defaults.
type Options struct {
	// Dir holds configuration, zone files and both servers' logs. Default: a
	// new temporary directory, removed by Close.
	Dir string
	// Zone served by BIND, with a trailing dot. Default "example.test.".
	Zone string
	// ListenIP of both servers. Default 127.0.0.1.
	ListenIP string
	// DNSPort, ACMEPort, MgmtPort: 0 picks a free port.
	DNSPort, ACMEPort, MgmtPort int
	// Command builds every command the environment runs (named, pebble,
	// nsupdate), e.g. to run them inside a network namespace with
	// `ip netns exec NS ...`. It must exec the named program in the same
	// process (like ip netns exec does), so that signals reach it. Default
	// exec.CommandContext.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
	// DialContext reaches ListenIP from this process (readiness checks, Roots,
	// SetRenewalInfo, Lookup). Default a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives progress messages. Default: discarded.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for each server. Default 20s.
	ReadyTimeout time.Duration
	// ChallengeDelay > 0 puts an HTTPS proxy in this process in front of
	// Pebble's ACME endpoint that holds each challenge POST's response this
	// long. Pebble validates within milliseconds but sends no Retry-After;
	// lego looks at the authorization once at once and otherwise only after
	// 5 s, so a validation that has not quite finished costs 5 s. The delay
	// makes sure it has. The proxy changes no content. Loopback only: it is
	// not available with a Command hook.
	ChallengeDelay time.Duration
	// EAB, when not empty, makes Pebble require External Account Binding for
	// new accounts and accept these MAC keys: key ID -> HMAC key, base64url
	// (padding is tolerated and dropped; Pebble wants none).
	EAB map[string]string
}

// Env is a running environment. Its exported fields are read-only.
type Env struct {
	DirectoryURL  string // https://IP:PORT/dir
	ManagementURL string // https://IP:PORT (roots, intermediates, set-renewal-info)
	DNSAddr       string // IP:PORT of BIND, UDP and TCP
	Zone          string // with a trailing dot
	TSIGKeyName   string // may update TXT records anywhere in Zone
	TSIGSecret    string // base64
	TSIGAlgorithm string // "hmac-sha256"
	// RecordsKeyName and RecordsKeySecret (same algorithm) may update A,
	// AAAA, CNAME and TXT records anywhere in Zone and transfer the zone
	// (AXFR): what a DNS-records manager needs.
	RecordsKeyName   string
	RecordsKeySecret string
	Dir              string

	opts       Options
	log        *slog.Logger
	named      string
	nsupdate   string
	pebbleBin  string
	tlsCA      []byte // PEM of the CA that signed Pebble's HTTPS certificate
	http       *http.Client
	removeDir  bool
	adminName  string // a second key allowed to update any record type (AddRecord)
	adminValue string

	pebblePort int // Pebble's own ACME port: ACMEPort, or an internal one behind the proxy

	mu      sync.Mutex
	dns     *process
	acme    *process
	proxy   *challengeProxy
	records []string // zone file lines added by AddRecord
}

// Start launches BIND and Pebble and waits until both answer.
func Start(ctx context.Context, o Options) (*Env, error) {
	if o.Zone == "" {
		o.Zone = "example.test."
	}
	if !strings.HasSuffix(o.Zone, ".") {
		o.Zone += "."
	}
	if o.ListenIP == "" {
		o.ListenIP = "127.0.0.1"
	}
	if net.ParseIP(o.ListenIP) == nil {
		return nil, fmt.Errorf("acmetest: ListenIP %q is not an IP address", o.ListenIP)
	}
	if o.Command == nil {
		o.Command = exec.CommandContext
	} else if o.ChallengeDelay > 0 {
		return nil, errors.New("acmetest: ChallengeDelay needs the servers in this network namespace (no Command hook)")
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 20 * time.Second
	}
	eab, err := eabKeys(o.EAB)
	if err != nil {
		return nil, err
	}
	o.EAB = eab
	named, nsupdate, pebble, err := findAssets()
	if err != nil {
		return nil, err
	}
	e := &Env{
		Zone: o.Zone, TSIGKeyName: "acme-key", TSIGAlgorithm: "hmac-sha256",
		opts: o, log: o.Logger, named: named, nsupdate: nsupdate, pebbleBin: pebble,
		adminName: "admin-key", RecordsKeyName: "records-key",
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "podtls-acmetest-")
		if err != nil {
			return nil, fmt.Errorf("acmetest: state dir: %w", err)
		}
		o.Dir, e.removeDir = d, true
	} else if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acmetest: state dir %s: %w", o.Dir, err)
	}
	e.Dir = o.Dir
	e.opts = o
	if err := e.pickPorts(&o); err != nil {
		e.Close()
		return nil, err
	}
	e.opts = o
	e.DNSAddr = net.JoinHostPort(o.ListenIP, strconv.Itoa(o.DNSPort))
	e.DirectoryURL = "https://" + net.JoinHostPort(o.ListenIP, strconv.Itoa(o.ACMEPort)) + "/dir"
	e.ManagementURL = "https://" + net.JoinHostPort(o.ListenIP, strconv.Itoa(o.MgmtPort))
	if err := e.writeTLS(); err != nil {
		e.Close()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.tlsCA)
	e.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     o.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	if err := e.writeNamedConfig(); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.writePebbleConfig(); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.StartDNS(ctx); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.StartACME(ctx); err != nil {
		e.Close()
		return nil, err
	}
	e.log.Info("acme test environment ready", "directory", e.DirectoryURL, "dns", e.DNSAddr, "zone", e.Zone)
	return e, nil
}

// StartT starts an environment for t and stops it when t ends. It skips t when
// the assets are missing (fails it when PODTLS_REQUIRE_ACME is set) and in
// -short mode.
func StartT(t testing.TB, o Options) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("acmetest: starts BIND9 and Pebble; skipped in -short mode")
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := Start(ctx, o)
	if errors.Is(err, ErrAssetsMissing) {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%v\n%s is set, so this is an error", err, RequireEnv)
		}
		t.Skipf("%v (set %s=1 to fail instead of skipping)", err, RequireEnv)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// Close stops both servers and removes Dir if Start created it.
func (e *Env) Close() {
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
	if e.dns != nil {
		e.dns.stop()
		e.dns = nil
	}
	if e.http != nil {
		e.http.CloseIdleConnections()
	}
	if e.removeDir {
		_ = os.RemoveAll(e.Dir)
	}
}

// RFC2136Config returns the settings of lego's rfc2136 DNS provider for this
// environment, keyed by lego's environment variable names: the non-secret
// config (nameserver, algorithm) and the credentials (key name, secret) that
// belong in a Secret. lego canonicalizes the key name and algorithm itself.
func (e *Env) RFC2136Config() (config, credentials map[string]string) {
	return map[string]string{
			"RFC2136_NAMESERVER":     e.DNSAddr,
			"RFC2136_TSIG_ALGORITHM": e.TSIGAlgorithm,
		}, map[string]string{
			"RFC2136_TSIG_KEY":    e.TSIGKeyName,
			"RFC2136_TSIG_SECRET": e.TSIGSecret,
		}
}

// ACMECABundle returns PEM that verifies the HTTPS certificate of Pebble's
// ACME and management endpoints (for a client's caBundle).
func (e *Env) ACMECABundle() []byte { return append([]byte(nil), e.tlsCA...) }

// HTTPClient returns a client that trusts ACMECABundle and dials through Options.DialContext.
func (e *Env) HTTPClient() *http.Client { return e.http }

// pickPorts fills the zero ports of o, all distinct, and Pebble's own port,
// and makes the TSIG secrets.
func (e *Env) pickPorts(o *Options) error {
	var err error
	if e.TSIGSecret, err = newSecret(); err != nil {
		return err
	}
	if e.adminValue, err = newSecret(); err != nil {
		return err
	}
	if e.RecordsKeySecret, err = newSecret(); err != nil {
		return err
	}
	used := map[int]bool{}
	pick := func(p *int) error {
		for *p == 0 || used[*p] {
			if *p, err = freePort(o.ListenIP); err != nil {
				return err
			}
		}
		used[*p] = true
		return nil
	}
	for _, p := range []*int{&o.DNSPort, &o.ACMEPort, &o.MgmtPort} {
		if *p != 0 {
			used[*p] = true
		}
	}
	for _, p := range []*int{&o.DNSPort, &o.ACMEPort, &o.MgmtPort} {
		if *p == 0 {
			if err := pick(p); err != nil {
				return err
			}
		}
	}
	e.pebblePort = o.ACMEPort
	if o.ChallengeDelay > 0 {
		e.pebblePort = 0
		if err := pick(&e.pebblePort); err != nil {
			return err
		}
	}
	return nil
}

// findAssets locates named, nsupdate and pebble.
func findAssets() (named, nsupdate, pebble string, err error) {
	var missing []string
	look := func(name string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			for _, d := range []string{"/usr/sbin", "/usr/bin"} {
				if fi, err := os.Stat(filepath.Join(d, name)); err == nil && !fi.IsDir() {
					return filepath.Join(d, name)
				}
			}
			missing = append(missing, name)
		}
		return p
	}
	named, nsupdate = look("named"), look("nsupdate")
	pebble = os.Getenv(PebbleEnv)
	if pebble == "" {
		root, rerr := gobuild.RepoRoot()
		if rerr != nil {
			return "", "", "", fmt.Errorf("%w: %v", ErrAssetsMissing, rerr)
		}
		pebble = filepath.Join(root, "bin", "tools", "pebble")
	}
	if fi, serr := os.Stat(pebble); serr != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		missing = append(missing, pebble)
	}
	if len(missing) > 0 {
		return "", "", "", fmt.Errorf("%w: %s not found", ErrAssetsMissing, strings.Join(missing, ", "))
	}
	return named, nsupdate, pebble, nil
}

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("acmetest: tsig secret: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// freePort finds a port free for both TCP and UDP on ip (or on loopback when
// ip is not local, e.g. inside a network namespace).
func freePort(ip string) (int, error) {
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			if ip != "127.0.0.1" {
				ip = "127.0.0.1"
				continue
			}
			return 0, fmt.Errorf("acmetest: free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		_ = l.Close()
		if err != nil {
			lastErr = err
			continue
		}
		_ = u.Close()
		return port, nil
	}
	return 0, fmt.Errorf("acmetest: no port free for TCP and UDP: %w", lastErr)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
