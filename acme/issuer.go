package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/renewal"
)

// IssuerOptions are the runtime dependencies of an Issuer.
type IssuerOptions struct {
	// Namespace of the controller: the account, EAB and DNS credentials
	// Secrets live there.
	Namespace string
	// Kube reads and writes those Secrets.
	Kube kubernetes.Interface
	// HTTPClient talks to the ACME server. Optional: by default a client with
	// the configuration's CA bundle (or the system roots), TLS 1.2 or newer
	// and timeouts. Its Transport is reused; tests use it to reach a local
	// Pebble.
	HTTPClient *http.Client
	// Logger gets the issuer's messages (and lego's, at debug level).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand draws in [0,1) where a renewal window leaves a choice (default
	// renewal.Draw).
	Rand func() float64
	// UserAgent is sent to the ACME server (default "podtls/<module
	// version>"; the controller should pass "podtls/<its version>").
	UserAgent string
}

// Issuer obtains certificates from one ACME server with the DNS-01 challenge.
// It is safe for concurrent use; the manager never runs two orders for the
// same host set at once (DNS providers replace a name's TXT record set).
//
// Context cancellation: lego's API takes no context, so every HTTP request to
// the ACME server is bound to the caller's context (it fails at once when the
// context ends) and the DNS propagation wait gives up within one polling
// interval. Calls to the DNS provider itself (an RFC 2136 update, a cloud
// API request) and the clean-up of TXT records after a failure run to
// completion.
type Issuer struct {
	cfg   issuerconfig.Config
	opts  IssuerOptions
	log   *slog.Logger
	httpc *http.Client // base client; per call wrapped with the call's context

	acctMu   sync.Mutex // one registration at a time
	mu       sync.Mutex
	account  *accountState // nil until EnsureAccount succeeded
	dnsRV    string        // resourceVersion of the credentials Secret behind provider
	provider challenge.Provider
	dir      *acme.Directory // cached once fetched
}

// NewIssuer checks cfg, builds the DNS provider from its credentials Secret
// and applies the process-wide DNS settings of lego (see
// applyGlobalDNSSettings). It does not contact the ACME server.
func NewIssuer(ctx context.Context, cfg issuerconfig.Config, opts IssuerOptions) (*Issuer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(providers.Catalog); err != nil {
		return nil, err
	}
	if opts.Kube == nil {
		return nil, errors.New("acme issuer: a Kubernetes client is required")
	}
	if opts.Namespace == "" {
		return nil, errors.New("acme issuer: the controller namespace is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = renewal.Draw
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UserAgent == "" {
		opts.UserAgent = defaultUserAgent()
	}
	i := &Issuer{cfg: cfg, opts: opts, log: opts.Logger.With("directory", cfg.DirectoryURL)}
	var err error
	if i.httpc, err = newHTTPClient(cfg, opts.HTTPClient); err != nil {
		return nil, err
	}
	if _, err := i.dnsProvider(ctx); err != nil {
		return nil, err
	}
	applyGlobalDNSSettings(cfg.DNS)
	setLegoLogger(opts.Logger)
	return i, nil
}

// defaultUserAgent is podtls/<module version> when the binary knows it.
func defaultUserAgent() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return "podtls/" + bi.Main.Version
	}
	return "podtls"
}

// Directory is the ACME directory URL of the issuer.
func (i *Issuer) Directory() string { return i.cfg.DirectoryURL }

// Config is the issuer's configuration, with defaults applied.
func (i *Issuer) Config() issuerconfig.Config { return i.cfg }

// dnsProvider returns the DNS provider, rebuilt when the credentials Secret
// changed since the last call (so rotated credentials apply to the next
// order without a restart).
func (i *Issuer) dnsProvider(ctx context.Context) (challenge.Provider, error) {
	d := i.cfg.DNS
	var creds map[string][]byte
	rv := ""
	if d.CredentialsSecretRef != nil {
		sec, err := i.opts.Kube.CoreV1().Secrets(i.opts.Namespace).Get(ctx, d.CredentialsSecretRef.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("acme issuer: DNS credentials Secret %s/%s: %w", i.opts.Namespace, d.CredentialsSecretRef.Name, err)
		}
		creds, rv = sec.Data, sec.ResourceVersion
	}
	i.mu.Lock()
	p, cachedRV := i.provider, i.dnsRV
	i.mu.Unlock()
	if p != nil && rv == cachedRV {
		return p, nil
	}
	// Built outside the lock: some providers call their API here (azuredns).
	p, err := providers.New(d.Provider, creds, d.Config, providers.Common{
		TTL: d.TTL, PropagationTimeout: d.PropagationTimeout.Duration, PollingInterval: d.PollingInterval.Duration,
	})
	if err != nil {
		return nil, fmt.Errorf("acme issuer: DNS provider: %w", err)
	}
	i.mu.Lock()
	i.provider, i.dnsRV = p, rv
	i.mu.Unlock()
	return p, nil
}

// legoClient builds a lego client whose every request is bound to ctx. A
// client per call costs one directory GET and keeps cancellation exact.
func (i *Issuer) legoClient(ctx context.Context, u *user) (*lego.Client, error) {
	lc := lego.NewConfig(u)
	lc.CADirURL = i.cfg.DirectoryURL
	lc.UserAgent = i.opts.UserAgent
	lc.HTTPClient = withContext(ctx, i.httpc)
	lc.Certificate.Timeout = 2 * time.Minute // wait for a processing order after finalize
	client, err := lego.NewClient(lc)
	if err != nil {
		return nil, fmt.Errorf("acme directory %s: %w", i.cfg.DirectoryURL, ctxErr(ctx, err))
	}
	return client, nil
}

// directory returns the server's directory object (cached): ARI support and
// profiles are read from it.
func (i *Issuer) directory(ctx context.Context) (*acme.Directory, error) {
	i.mu.Lock()
	d := i.dir
	i.mu.Unlock()
	if d != nil {
		return d, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, i.cfg.DirectoryURL, nil)
	if err != nil {
		return nil, fmt.Errorf("acme directory: %w", err)
	}
	req.Header.Set("User-Agent", i.opts.UserAgent)
	resp, err := i.httpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("acme directory: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("acme directory %s: %s", i.cfg.DirectoryURL, resp.Status)
	}
	d = &acme.Directory{}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(d); err != nil {
		return nil, fmt.Errorf("acme directory %s: %w", i.cfg.DirectoryURL, err)
	}
	if d.NewOrderURL == "" || d.NewAccountURL == "" {
		return nil, fmt.Errorf("acme directory %s: not an ACME directory", i.cfg.DirectoryURL)
	}
	i.mu.Lock()
	i.dir = d
	i.mu.Unlock()
	return d, nil
}

// Obtain orders a certificate for hosts with a fresh key of the configured
// type. replaces, when given and the server supports ARI, is announced as the
// certificate this one replaces (RFC 9773), which exempts the order from some
// rate limits at Let's Encrypt.
func (i *Issuer) Obtain(ctx context.Context, hosts []string, replaces *x509.Certificate) (*Certificate, error) {
	start := i.opts.Now()
	if len(hosts) == 0 {
		return nil, errors.New("acme obtain: no host names")
	}
	provider, err := i.dnsProvider(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := i.directory(ctx)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if p := i.cfg.Profile; p != "" && len(dir.Meta.Profiles) > 0 {
		if _, ok := dir.Meta.Profiles[p]; !ok {
			return nil, fmt.Errorf("acme obtain: the server offers no profile %q (it has %s)", p, strings.Join(sortedKeys(dir.Meta.Profiles), ", "))
		}
	}
	key, err := newKey(i.cfg.KeyType)
	if err != nil {
		return nil, err
	}
	req := certificate.ObtainRequest{Domains: hosts, PrivateKey: key, Bundle: true, Profile: i.cfg.Profile}
	if replaces != nil && dir.RenewalInfo != "" && *i.cfg.Renewal.ARI {
		if req.ReplacesCertID, err = certificate.MakeARICertID(replaces); err != nil {
			i.log.Warn("cannot name the replaced certificate for ARI; ordering without it", "hosts", hosts, "error", err)
			req.ReplacesCertID = ""
		}
	}
	var res *certificate.Resource
	for attempt := 1; ; attempt++ {
		res, err = i.order(ctx, provider, &req)
		var pd *acme.ProblemDetails
		if err == nil || attempt > 1 || !errors.As(err, &pd) || pd.Type != errAccountDoesNotExist {
			break
		}
		// The server forgot the account (a test server restarted, or the
		// account was deactivated): the order was refused before anything
		// happened, so register again and retry once.
		i.log.Warn("the ACME server does not know the account any more; registering again", "hosts", hosts)
		i.mu.Lock()
		i.account = nil
		i.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("acme order for %s: %w", strings.Join(hosts, ","), ctxErr(ctx, err))
	}
	cert, err := newCertificate(res.Certificate, key, hosts)
	if err != nil {
		return nil, fmt.Errorf("acme order for %s: %w", strings.Join(hosts, ","), err)
	}
	i.log.Info("certificate obtained", "hosts", hosts, "serial", cert.Leaf.SerialNumber.Text(16),
		"notAfter", cert.Leaf.NotAfter, "replaces", req.ReplacesCertID != "", "duration", i.opts.Now().Sub(start).Round(time.Millisecond))
	return cert, nil
}

// order runs one lego order with the account (registered if needed).
func (i *Issuer) order(ctx context.Context, provider challenge.Provider, req *certificate.ObtainRequest) (*certificate.Resource, error) {
	acct, err := i.ensureAccount(ctx)
	if err != nil {
		return nil, err
	}
	client, err := i.legoClient(ctx, &user{email: i.cfg.Email, key: acct.key, reg: acct.reg})
	if err != nil {
		return nil, err
	}
	if err := client.Challenge.SetDNS01Provider(provider, i.challengeOptions(ctx)...); err != nil {
		return nil, fmt.Errorf("DNS-01 solver: %w", err)
	}
	res, err := client.Certificate.Obtain(*req)
	var pd *acme.ProblemDetails
	if err != nil && req.ReplacesCertID != "" && errors.As(err, &pd) && pd.Type == acme.AlreadyReplacedErr {
		// An earlier order already replaced it (e.g. a renewal whose result
		// was lost): a plain order is the right thing now.
		i.log.Info("replaced certificate already has a replacement; ordering without ARI replaces", "hosts", req.Domains)
		req.ReplacesCertID = ""
		res, err = client.Certificate.Obtain(*req)
	}
	return res, err
}

// challengeOptions are the per-order DNS-01 settings (the process-wide ones
// are in applyGlobalDNSSettings).
func (i *Issuer) challengeOptions(ctx context.Context) []dns01.ChallengeOption {
	opts := []dns01.ChallengeOption{
		// Stop waiting for propagation as soon as the caller gives up
		// (lego's wait loop ends only on stop=true, with its error).
		dns01.WrapPreCheck(func(_, fqdn, value string, check dns01.PreCheckFunc) (bool, error) {
			if err := ctx.Err(); err != nil {
				return true, err
			}
			return check(fqdn, value)
		}),
	}
	if !*i.cfg.DNS.AuthoritativeNSCheck {
		// Without the authoritative check lego would not look at all:
		// keep a real check against the recursive name servers.
		opts = append(opts, dns01.DisableAuthoritativeNssPropagationRequirement(), dns01.RecursiveNSsPropagationRequirement())
	}
	return opts
}

// newCertificate checks lego's result and builds the stored form.
func newCertificate(chainPEM []byte, key crypto.Signer, hosts []string) (*Certificate, error) {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("the server returned no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("the issued certificate is not for the key of the order")
	}
	names := map[string]bool{}
	for _, n := range leaf.DNSNames {
		names[strings.ToLower(n)] = true
	}
	for _, h := range hosts {
		if !names[strings.ToLower(strings.TrimSuffix(h, "."))] {
			return nil, fmt.Errorf("the issued certificate does not name %s", h)
		}
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return nil, err
	}
	return &Certificate{ChainPEM: chainPEM, KeyPEM: keyPEM, Leaf: leaf}, nil
}

// ctxErr prefers the context's error, so callers can tell cancellation from
// a failed order with errors.Is.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}
