// Package options binds the podtls-sidecar flags onto one struct and
// validates them; every error names the flag it is about.
package options

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/sidecar/proxy"
)

// Config is the sidecar's whole configuration, defaults included.
type Config struct {
	Inbound  []proxy.Inbound
	Outbound []proxy.Outbound
	CertDir  string
	// CredentialBundle replaces CertDir: one PEM file with the key and the
	// chain (the kubelet's podCertificate projection).
	CredentialBundle string
	TrustBundle      string
	ExternalCertDirs []string

	// Agent mode: with CAURL set the sidecar requests its own certificate.
	CAURL     string
	TokenFile string
	DNSNames  []string
	CertTTL   time.Duration
	// Workload: a machine outside Kubernetes; TokenFile is its join token.
	Workload bool

	// DiscoveryURL is the controller serving endpoint discovery to balanced
	// outbound listeners; empty means CAURL (the same server).
	DiscoveryURL string

	Allow       []string
	TrustDomain string
	Matcher     *identity.Matcher

	Mode             string
	Admin            string
	DrainTimeout     time.Duration
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	DialTimeout      time.Duration
	MaxConnections   int
	PollInterval     time.Duration
	// PlaintextCheck is the interval of the plaintext-bypass check; 0 turns it off.
	PlaintextCheck time.Duration
	PostQuantum    bool
	ALPN           []string
	LogLevel       slog.Level
	// AccessLog writes one JSON line per HTTP request (http mode) and per
	// spliced connection (tcp) to stdout.
	AccessLog bool

	// Edge: the plaintext redirect listener, the proxies whose
	// X-Forwarded-For is trusted, the inbound listeners behind a load
	// balancer sending PROXY protocol v2 (by Listen address).
	Redirect       *proxy.Redirect
	TrustedProxies []netip.Prefix
	ProxyProtocol  map[string]bool

	// AppCerts writes the certificates for the app; nil: off.
	AppCerts *AppCerts
}

// AgentMode reports whether the sidecar requests certificates from the CA.
func (c *Config) AgentMode() bool { return c.CAURL != "" }

// Discovery is the base URL of endpoint discovery: --discovery-url, else
// --ca-url, else empty (none).
func (c *Config) Discovery() string {
	if c.DiscoveryURL != "" {
		return strings.TrimSuffix(c.DiscoveryURL, "/")
	}
	return strings.TrimSuffix(c.CAURL, "/")
}

// Default returns the defaults every flag starts from.
func Default() Config {
	return Config{
		TrustDomain:      identity.DefaultTrustDomain,
		Mode:             proxy.ModeTCP,
		Admin:            "127.0.0.1:15000",
		DrainTimeout:     contract.DefaultDrainTimeout,
		HandshakeTimeout: 10 * time.Second,
		IdleTimeout:      contract.DefaultIdleTimeout,
		DialTimeout:      5 * time.Second,
		MaxConnections:   16384,
		PollInterval:     10 * time.Second,
		PlaintextCheck:   time.Minute,
		LogLevel:         slog.LevelInfo,
	}
}

// Parse reads args (without the program name). With --help it prints the
// usage to out and returns flag.ErrHelp.
func Parse(args []string, out io.Writer) (*Config, error) {
	c := Default()
	fs := flag.NewFlagSet("podtls-sidecar", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, "Usage: podtls-sidecar [flags]\n\nTLS/mTLS sidecar: terminates inbound TLS, originates outbound mTLS, reloads certificates without restarts.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var inbound, outbound []string
	fs.Func("inbound", "TLS listener on LISTEN forwarding plaintext to the app at TARGET, which speaks PROTOCOL: tcp (bytes), http1 or h2c (plaintext HTTP/2, gRPC); default: the mode's (tcp or http1): `LISTEN=TARGET[/PROTOCOL]`, e.g. :8443=127.0.0.1:8080 or :9443=127.0.0.1:9090/h2c (repeatable)", appendTo(&inbound))
	fs.Func("outbound", "loopback plaintext listener dialing HOST:PORT with mTLS, verifying its name and, if given, its SPIFFE ID, or with tls:// TLS verified by the system roots; PROTOCOL tcp forwards each connection, http balances each HTTP/1.1 or h2c request over the upstream's endpoints (default: the mode's): `LISTEN=[tls://]HOST:PORT[/PROTOCOL][#SPIFFE-ID]`, e.g. localhost:9001=preference.demo.svc:8443 (localhost: 127.0.0.1 and ::1 when present; repeatable)", appendTo(&outbound))
	fs.StringVar(&c.CertDir, "cert-dir", c.CertDir, "`DIR` holding the mesh certificate: tls.crt (leaf + chain), tls.key and optionally ca.crt (this or --credential-bundle is required)")
	fs.StringVar(&c.CredentialBundle, "credential-bundle", c.CredentialBundle, "`FILE` holding the mesh certificate's key (PKCS#8) and then its chain, the kubelet's podCertificate credentialBundlePath; watched and reloaded like --cert-dir, instead of it")
	fs.StringVar(&c.TrustBundle, "trust-bundle", c.TrustBundle, "PEM `FILE` of trusted mesh roots; may be absent at start (its union with <cert-dir>/ca.crt is trusted)")
	fs.Func("external-cert-dir", "`DIR` with an externally issued certificate (tls.crt full chain, tls.key) served to clients whose SNI matches it, without client certificates (repeatable)", appendTo(&c.ExternalCertDirs))
	fs.StringVar(&c.CAURL, "ca-url", c.CAURL, "agent mode: https `URL` of the podtls CA; the sidecar then requests and renews its own certificate into --cert-dir")
	fs.StringVar(&c.DiscoveryURL, "discovery-url", c.DiscoveryURL, "https `URL` of the podtls controller serving endpoint discovery, for outbound listeners that balance each request (http mode, or /http); default: --ca-url; without either they dial the upstream by name")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "agent mode: `FILE` with the projected service-account token, re-read on every request")
	fs.BoolVar(&c.Workload, "workload", c.Workload, "agent mode on a machine outside Kubernetes (podtls workload register): --token-file is the one-time join token, removed once used; renewals authenticate with the current certificate")
	fs.Func("dns-name", "agent mode: extra DNS `NAME` to request in the certificate (repeatable)", appendTo(&c.DNSNames))
	fs.DurationVar(&c.CertTTL, "cert-ttl", c.CertTTL, "agent mode: requested certificate lifetime; 0 means the CA's default")
	fs.Func("allow", "SPIFFE `ID` allowed to call inbound listeners: exact, or a prefix ending in /* (repeatable; default: any ID of --trust-domain)", appendTo(&c.Allow))
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust `DOMAIN` used when --allow is not given")
	fs.StringVar(&c.Mode, "mode", c.Mode, "proxy `MODE`: tcp (bytes, any protocol) or http (HTTP/1.1 and h2, X-Forwarded-* and X-Podtls-Client-Id headers)")
	fs.StringVar(&c.Admin, "admin", c.Admin, "`ADDR` of /healthz, /readyz, /metrics, /certs and /plaintext")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "on SIGTERM, how long open connections may finish before they are closed")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", c.HandshakeTimeout, "TLS handshake timeout")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close a connection after this long without bytes in either direction")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "timeout to connect to the app or an upstream")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "open client connections over all listeners; more are closed at accept (0: unlimited)")
	fs.DurationVar(&c.PollInterval, "poll-interval", c.PollInterval, "backstop re-read of certificate files besides file-system events")
	fs.DurationVar(&c.PlaintextCheck, "plaintext-check-interval", c.PlaintextCheck, "how often to check that the app's target ports are not reachable in plaintext on the pod IP (POD_IP, POD_IPS); 0 turns the check off")
	fs.BoolVar(&c.PostQuantum, "pq-key-exchange", c.PostQuantum, "prefer the hybrid post-quantum key exchange X25519MLKEM768 (about 60 us more CPU per handshake)")
	fs.Func("alpn", "tcp mode: ALPN `PROTOCOLS` (comma-separated, e.g. h2) inbound listeners whose protocol is tcp offer to TLS clients; the app must speak the chosen protocol in plaintext. Listeners with /http1 offer http/1.1, with /h2c h2 (gRPC). Default: none", func(s string) error {
		for _, p := range strings.Split(s, ",") {
			p = strings.TrimSpace(p)
			if p == "" || len(p) > 255 {
				return fmt.Errorf("protocol %q: want a non-empty name of at most 255 bytes", p)
			}
			c.ALPN = append(c.ALPN, p)
		}
		return nil
	})
	var edge edgeFlags
	edge.bind(fs)
	var app appCertFlags
	app.bind(fs)
	fs.TextVar(&c.LogLevel, "log-level", c.LogLevel, "log `LEVEL`: debug, info, warn, error")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "write an access log to stdout, one JSON line per HTTP request (http mode) and per spliced connection (tcp): method, authority, path without the query string, status, duration, bytes, peer SPIFFE ID; never headers or bodies")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (all settings are --flags)", fs.Arg(0))
	}
	for _, s := range inbound {
		in, err := proxy.ParseInbound(s)
		if err != nil {
			return nil, fmt.Errorf("--inbound %w", err)
		}
		c.Inbound = append(c.Inbound, in)
	}
	for _, s := range outbound {
		o, err := proxy.ParseOutbound(s)
		if err != nil {
			return nil, fmt.Errorf("--outbound %w", err)
		}
		c.Outbound = append(c.Outbound, o)
	}
	if err := app.apply(&c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := edge.apply(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

func appendTo(dst *[]string) func(string) error {
	return func(s string) error {
		if strings.TrimSpace(s) == "" {
			return errors.New("empty value")
		}
		*dst = append(*dst, s)
		return nil
	}
}

func (c *Config) validate() error {
	if len(c.Inbound)+len(c.Outbound) == 0 && c.AppCerts == nil {
		return errors.New("nothing to do: give at least one --inbound or --outbound, or --app-cert-dir")
	}
	switch {
	case c.CertDir == "" && c.CredentialBundle == "":
		return errors.New("--cert-dir (or --credential-bundle) is required")
	case c.CertDir != "" && c.CredentialBundle != "":
		return errors.New("--cert-dir and --credential-bundle both name the mesh certificate: give one")
	case c.CredentialBundle != "" && c.AgentMode():
		return errors.New("--credential-bundle is written by the kubelet; --ca-url (the agent) writes --cert-dir: give one")
	}
	if err := uniqueListen(c.Inbound, c.Outbound); err != nil {
		return err
	}
	if c.Mode != proxy.ModeTCP && c.Mode != proxy.ModeHTTP {
		return fmt.Errorf("--mode %q: want tcp or http", c.Mode)
	}
	for _, o := range c.Outbound {
		if (o.Timeout > 0 || o.Retries > 0) && !o.Balanced(c.Mode) {
			return fmt.Errorf("--outbound %s=%s: a request timeout or retries need a balanced listener (/http, or --mode http)", o.Listen, o.Upstream)
		}
	}
	if c.Mode == proxy.ModeHTTP && len(c.ALPN) > 0 {
		return errors.New("--alpn applies to --mode tcp; http mode always offers h2 and http/1.1")
	}
	if err := identity.ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	m, err := identity.NewMatcher(c.TrustDomain, c.Allow)
	if err != nil {
		return fmt.Errorf("--allow: %w", err)
	}
	c.Matcher = m
	if err := checkAddr(c.Admin); err != nil {
		return fmt.Errorf("--admin %q: %w", c.Admin, err)
	}
	for name, d := range map[string]time.Duration{"--drain-timeout": c.DrainTimeout, "--handshake-timeout": c.HandshakeTimeout, "--idle-timeout": c.IdleTimeout, "--dial-timeout": c.DialTimeout, "--poll-interval": c.PollInterval} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	if c.PlaintextCheck < 0 {
		return fmt.Errorf("--plaintext-check-interval must not be negative, got %s", c.PlaintextCheck)
	}
	if c.CertTTL < 0 {
		return fmt.Errorf("--cert-ttl must not be negative, got %s", c.CertTTL)
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("--max-connections must not be negative, got %d", c.MaxConnections)
	}
	if c.DiscoveryURL != "" {
		if u, err := url.Parse(c.DiscoveryURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("--discovery-url %q: want https://host[:port]", c.DiscoveryURL)
		}
	}
	if c.CAURL == "" {
		switch {
		case c.TokenFile != "":
			return errors.New("--token-file needs --ca-url (agent mode)")
		case len(c.DNSNames) > 0:
			return errors.New("--dns-name needs --ca-url (agent mode)")
		case c.CertTTL != 0:
			return errors.New("--cert-ttl needs --ca-url (agent mode)")
		case c.Workload:
			return errors.New("--workload needs --ca-url (agent mode)")
		}
		return nil
	}
	u, err := url.Parse(c.CAURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return fmt.Errorf("--ca-url %q: want https://host[:port]", c.CAURL)
	}
	if c.TokenFile == "" {
		return errors.New("--token-file is required with --ca-url")
	}
	for _, n := range c.DNSNames {
		if err := identity.ValidateDNSName(n); err != nil {
			return fmt.Errorf("--dns-name %q: %w", n, err)
		}
	}
	return nil
}

func uniqueListen(in []proxy.Inbound, out []proxy.Outbound) error {
	seen := map[string]bool{}
	check := func(flagName, addr string) error {
		_, port, _ := net.SplitHostPort(addr)
		if seen[port] {
			return fmt.Errorf("%s %s: port %s is used by another listener", flagName, addr, port)
		}
		seen[port] = true
		return nil
	}
	for _, i := range in {
		if err := check("--inbound", i.Listen); err != nil {
			return err
		}
	}
	for _, o := range out {
		if err := check("--outbound", o.Listen); err != nil {
			return err
		}
	}
	return nil
}

func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want 0-65535", port)
	}
	return nil
}
