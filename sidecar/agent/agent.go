// Package agent obtains and renews the mesh certificate from the podtls CA:
// the key is generated in memory, a CSR goes to POST /v1/sign with the
// projected service-account token (re-read on every call), and the result is
// written into the cert dir in one atomic step. The certificate store picks it
// up like any other file change, so the serving path is the same with or
// without the agent.
package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/renewal"
	"github.com/podtls/podtls/sidecar/atomicdir"
	"github.com/podtls/podtls/sidecar/certs"
	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/tlsconfig"
)

// ParseEnvRoots parses the value of contract.EnvTrustRoots (extra PEM roots the
// webhook injects so the agent can verify the CA before the trust-bundle
// ConfigMap reaches the namespace); empty means none.
func ParseEnvRoots(s string) ([]*x509.Certificate, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	return certs.ParseCertificates([]byte(s))
}

// Store is what the agent needs from the certificate store.
type Store interface {
	MeshCertificate() *tls.Certificate
	TrustCertificates() []*x509.Certificate
	Reload() error
}

// Config configures an Agent.
type Config struct {
	CAURL     string
	TokenFile string
	// Workload: a machine outside Kubernetes (podtls workload register).
	// TokenFile then holds a one-time join token, used only while the store
	// has no valid certificate (signapi.JoinPath) and removed once used;
	// renewals authenticate with the current certificate (RenewPath).
	Workload bool
	DNSNames []string
	TTL      time.Duration // 0: the CA's default
	CertDir  string
	Store    Store
	// ExtraRoots are trusted for the CA endpoint besides the store's pool.
	ExtraRoots []*x509.Certificate
	TLS        tlsconfig.Options
	Logger     *slog.Logger
	Registry   *metrics.Registry

	RequestTimeout time.Duration // default 30s
	MaxBackoff     time.Duration // default 1m
	// PermanentRetry is the wait after an error retrying cannot fix soon
	// (4xx other than 429: bad token audience, names refused). Default 5m.
	PermanentRetry time.Duration
	Now            func() time.Time
	Rand           func() float64 // [0,1), for jitter
}

// Agent requests and renews the certificate.
type Agent struct {
	c        Config
	log      *slog.Logger
	requests *metrics.CounterVec

	// mu serialises certificate requests: the renewal loop and a forced
	// renewal (RenewNow) must not write the cert dir at the same time.
	mu sync.Mutex

	renewSerial string
	renewTime   time.Time
}

// New checks cfg and returns an Agent.
func New(c Config) (*Agent, error) {
	switch {
	case c.CAURL == "":
		return nil, errors.New("agent: CA URL is required")
	case c.TokenFile == "":
		return nil, errors.New("agent: token file is required (workload: the join token file)")
	case c.CertDir == "":
		return nil, errors.New("agent: cert dir is required")
	case c.Store == nil:
		return nil, errors.New("agent: store is required")
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Minute
	}
	if c.PermanentRetry <= 0 {
		c.PermanentRetry = 5 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = renewal.Draw
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = metrics.NewRegistry()
	}
	return &Agent{
		c: c, log: c.Logger.With("component", "agent"),
		requests: c.Registry.NewCounterVec("podtls_sidecar_agent_sign_requests_total", "Sign requests to the CA by result (success, transient, permanent).", "result"),
	}, nil
}

// Backoff is the wait after the attempt-th consecutive failure (1-based):
// 1s doubling up to limit, each wait drawn from [d/2, d) by jitter in [0,1).
func Backoff(attempt int, limit time.Duration, jitter float64) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	jitter = min(max(jitter, 0), 1)
	return d/2 + time.Duration(float64(d/2)*jitter)
}

// Run keeps a valid certificate in the cert dir until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	failures := 0
	for {
		wait := a.untilRenewal()
		if wait <= 0 {
			err := a.RenewOnce(ctx)
			switch {
			case err == nil:
				failures = 0
				continue
			case ctx.Err() != nil:
				return
			}
			failures++
			wait = Backoff(failures, a.c.MaxBackoff, a.c.Rand())
			var se *StatusError
			permanent := errors.As(err, &se) && se.Permanent()
			switch {
			case permanent:
				// Retrying soon cannot fix a refused token or name.
				wait = a.c.PermanentRetry
			case se != nil && se.RetryAfter > wait:
				wait = min(se.RetryAfter, a.c.PermanentRetry)
			}
			level := slog.LevelWarn
			if permanent {
				level = slog.LevelError
			}
			a.log.Log(ctx, level, "certificate request failed; the current certificate stays in service",
				"error", err, "permanent", permanent, "attempt", failures, "retry_in", wait.Round(time.Millisecond).String())
		}
		// Wake up at least every few minutes: the files may change under us.
		wait = min(wait, 5*time.Minute)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) untilRenewal() time.Duration {
	cur := a.c.Store.MeshCertificate()
	if cur == nil {
		return 0
	}
	serial := cur.Leaf.SerialNumber.Text(16)
	if serial != a.renewSerial {
		a.renewSerial = serial
		a.renewTime = renewal.Mesh.At(cur.Leaf.NotBefore, cur.Leaf.NotAfter, a.c.Rand())
		a.log.Info("renewal scheduled", "serial", serial, "renew_at", a.renewTime.UTC().Format(time.RFC3339))
	}
	return a.renewTime.Sub(a.c.Now())
}

// StatusError is a non-200 answer of the CA.
type StatusError struct {
	Code       int
	Message    string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("CA answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Permanent reports an error that retrying soon will not fix (4xx but 429).
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusTooManyRequests
}

// RenewNow requests a new certificate at once, whatever the schedule (an
// operator forcing a rotation through the admin server), and returns the
// leaf now served. The renewal loop reschedules from the new certificate.
func (a *Agent) RenewNow(ctx context.Context) (*x509.Certificate, error) {
	a.log.Info("forced renewal requested")
	if err := a.RenewOnce(ctx); err != nil {
		return nil, err
	}
	cur := a.c.Store.MeshCertificate()
	if cur == nil {
		return nil, errors.New("no certificate in the store after renewal")
	}
	return cur.Leaf, nil
}

// RenewOnce requests a certificate and installs it.
func (a *Agent) RenewOnce(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	// The URI SAN is left out: the CA derives the SPIFFE ID from the token.
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: a.c.DNSNames}, key)
	if err != nil {
		return fmt.Errorf("create CSR: %w", err)
	}
	resp, err := a.sign(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) && se.Permanent() {
			a.requests.With("permanent").Inc()
		} else {
			a.requests.With("transient").Inc()
		}
		return err
	}
	chainPEM, bundlePEM, err := a.check(&resp.SignResponse, key)
	if err != nil {
		a.requests.With("transient").Inc()
		return fmt.Errorf("CA response: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	// Pods get the directory as a volume; a machine's is created here, private.
	if err := os.MkdirAll(a.c.CertDir, 0o700); err != nil {
		return fmt.Errorf("create cert dir: %w", err)
	}
	err = atomicdir.Write(a.c.CertDir, []atomicdir.File{
		{Name: certs.KeyFile, Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Mode: 0o600},
		{Name: certs.CertFile, Data: chainPEM, Mode: 0o644},
		{Name: certs.CAFile, Data: bundlePEM, Mode: 0o644},
	})
	if err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	a.requests.With("success").Inc()
	_ = a.c.Store.Reload()
	cur := a.c.Store.MeshCertificate()
	leafSerial := serialOf(chainPEM)
	if cur == nil || cur.Leaf.SerialNumber.Text(16) != leafSerial {
		return fmt.Errorf("the certificate store did not accept the new certificate (serial %s); see its log", leafSerial)
	}
	a.log.Info("certificate issued", "serial", leafSerial, "not_after", cur.Leaf.NotAfter.UTC().Format(time.RFC3339))
	if resp.Joined {
		// Spent, and the certificate is safe on disk: nothing reusable stays.
		if err := os.Remove(a.c.TokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("cannot remove the used join token", "file", a.c.TokenFile, "err", err)
		} else {
			a.log.Info("joined the mesh; join token removed", "file", a.c.TokenFile)
		}
	}
	return nil
}

func serialOf(chainPEM []byte) string {
	cs, err := certs.ParseCertificates(chainPEM)
	if err != nil {
		return ""
	}
	return cs[0].SerialNumber.Text(16)
}

// signed is the CA's answer, and whether the join token was spent on it.
type signed struct {
	signapi.SignResponse
	Joined bool
}

func (a *Agent) sign(ctx context.Context, csrPEM []byte) (*signed, error) {
	path, token, client, err := a.credentials()
	if err != nil {
		return nil, err
	}
	req := signapi.SignRequest{CSR: string(csrPEM)}
	if a.c.TTL > 0 {
		req.TTL = a.c.TTL.String()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.c.RequestTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(a.c.CAURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	hresp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read CA response: %w", err)
	}
	if hresp.StatusCode != http.StatusOK {
		se := &StatusError{Code: hresp.StatusCode}
		var e signapi.Error
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			se.Message = e.Message
		} else {
			se.Message = strings.TrimSpace(string(data[:min(len(data), 200)]))
		}
		if s, err := strconv.Atoi(hresp.Header.Get("Retry-After")); err == nil && s > 0 {
			se.RetryAfter = time.Duration(s) * time.Second
		}
		return nil, se
	}
	var out signed
	if err := json.Unmarshal(data, &out.SignResponse); err != nil {
		return nil, fmt.Errorf("decode CA response: %w", err)
	}
	out.Joined = path == signapi.JoinPath
	return &out, nil
}

// credentials picks the endpoint and the authentication of the next
// request: a pod's projected token (sign); for a workload, its current
// certificate (renew) or, without a valid one, its join token (join).
func (a *Agent) credentials() (path, token string, client *http.Client, err error) {
	tlsCfg := tlsconfig.HTTPSClient(a.roots(), a.c.TLS)
	client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:   tlsCfg,
		DisableKeepAlives: true, // one request per renewal; the roots may change in between
		Proxy:             http.ProxyFromEnvironment,
	}}
	path = signapi.SignPath
	if a.c.Workload {
		if cur := a.c.Store.MeshCertificate(); cur != nil && cur.Leaf != nil && a.c.Now().Before(cur.Leaf.NotAfter) {
			tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil }
			return signapi.RenewPath, "", client, nil
		}
		path = signapi.JoinPath
	}
	// Re-read every time: kubelet rotates the projected token.
	tok, err := os.ReadFile(a.c.TokenFile)
	if a.c.Workload && errors.Is(err, os.ErrNotExist) {
		return "", "", nil, fmt.Errorf("no valid certificate and no join token in %s: issue one with podtls workload token", a.c.TokenFile)
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("read token %s: %w", a.c.TokenFile, err)
	}
	token = strings.TrimSpace(string(tok))
	if token == "" {
		return "", "", nil, fmt.Errorf("token file %s is empty", a.c.TokenFile)
	}
	return path, token, client, nil
}

func (a *Agent) roots() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range a.c.Store.TrustCertificates() {
		p.AddCert(c)
	}
	for _, c := range a.c.ExtraRoots {
		p.AddCert(c)
	}
	return p
}

// check makes sure the answer is usable before it touches the disk: the leaf
// carries our key, is valid now and chains to the bundle that comes with it.
func (a *Agent) check(resp *signapi.SignResponse, key *ecdsa.PrivateKey) (chainPEM, bundlePEM []byte, err error) {
	chain, err := certs.ParseCertificates([]byte(resp.CertificateChain))
	if err != nil {
		return nil, nil, fmt.Errorf("certificate_chain: %w", err)
	}
	bundle, err := certs.ParseCertificates([]byte(resp.TrustBundle))
	if err != nil {
		return nil, nil, fmt.Errorf("trust_bundle: %w", err)
	}
	pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, errors.New("certificate does not carry the key of our CSR")
	}
	pair := &tls.Certificate{Leaf: chain[0]}
	for _, c := range chain {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	pool := x509.NewCertPool()
	for _, c := range bundle {
		pool.AddCert(c)
	}
	if err := certs.ValidateMesh(pair, pool, a.c.Now()); err != nil {
		return nil, nil, err
	}
	return []byte(resp.CertificateChain), []byte(resp.TrustBundle), nil
}
