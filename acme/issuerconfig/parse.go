package issuerconfig

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Defaults of the fields Default fills in.
const (
	DefaultKeyType              = KeyECDSAP256
	DefaultAccountSecret        = "podtls-acme-account"
	DefaultEABKey               = "hmac"
	DefaultPropagationTimeout   = 2 * time.Minute
	DefaultPollingInterval      = 2 * time.Second
	DefaultLifetimeFraction     = 2.0 / 3.0
	DefaultMinBackoff           = time.Minute
	DefaultMaxBackoff           = 6 * time.Hour
	DefaultMaxOrdersPerNameHour = 3
	DefaultSecretGracePeriod    = 24 * time.Hour
)

// Key types of certificate keys.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyRSA2048   = "rsa-2048"
	KeyRSA4096   = "rsa-4096"
)

// KeyTypes lists the accepted values of Config.KeyType.
var KeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA4096}

// Upper bounds that catch unit mistakes ("30000s" meant as ms) early.
const (
	maxPropagationTimeout = time.Hour
	maxBackoffLimit       = 7 * 24 * time.Hour
	maxOrdersPerNameHour  = 100
	maxTTL                = 86400
)

// Default returns the configuration every zero field of a file falls back to.
// It has no DNS provider: a usable configuration names one.
func Default() Config {
	return Config{}.WithDefaults()
}

// WithDefaults returns c with every zero field set to its default. Maps and
// slices are shared with c.
func (c Config) WithDefaults() Config {
	if c.DirectoryURL == "" {
		c.DirectoryURL = LetsEncryptStaging
	}
	if c.KeyType == "" {
		c.KeyType = DefaultKeyType
	}
	if c.AccountSecret == "" {
		c.AccountSecret = DefaultAccountSecret
	}
	if c.ExternalAccountBinding != nil && c.ExternalAccountBinding.HMACKeySecretRef.Key == "" {
		eab := *c.ExternalAccountBinding
		eab.HMACKeySecretRef.Key = DefaultEABKey
		c.ExternalAccountBinding = &eab
	}
	if c.DNS.AuthoritativeNSCheck == nil {
		c.DNS.AuthoritativeNSCheck = ptr(true)
	}
	if c.DNS.PropagationTimeout.Duration == 0 {
		c.DNS.PropagationTimeout.Duration = DefaultPropagationTimeout
	}
	if c.DNS.PollingInterval.Duration == 0 {
		c.DNS.PollingInterval.Duration = DefaultPollingInterval
	}
	if c.Renewal.ARI == nil {
		c.Renewal.ARI = ptr(true)
	}
	if c.Renewal.LifetimeFraction == 0 {
		c.Renewal.LifetimeFraction = DefaultLifetimeFraction
	}
	if c.Renewal.MinBackoff.Duration == 0 {
		c.Renewal.MinBackoff.Duration = DefaultMinBackoff
	}
	if c.Renewal.MaxBackoff.Duration == 0 {
		c.Renewal.MaxBackoff.Duration = DefaultMaxBackoff
	}
	if c.Renewal.MaxOrdersPerNamePerHour == 0 {
		c.Renewal.MaxOrdersPerNamePerHour = DefaultMaxOrdersPerNameHour
	}
	if c.SecretGracePeriod.Duration == 0 {
		c.SecretGracePeriod.Duration = DefaultSecretGracePeriod
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// Catalog is what validation needs to know of the DNS providers compiled into
// the binary that will use the configuration: acme/providers.Catalog in the
// controller. The package does not import the providers itself, so that a
// binary that only reads configurations (the podtls CLI) links no lego.
type Catalog interface {
	Names() []string
	Known(name string) bool
	CheckConfig(name string, config map[string]string) error
}

// Parse decodes a YAML or JSON configuration, fills in the defaults and
// validates the result against the providers of cat (nil: any provider name,
// its settings unchecked). Unknown fields are errors (a typo must not
// silently fall back to a default such as the staging directory).
func Parse(data []byte, cat Catalog) (Config, error) {
	if multipleDocuments(data) {
		return Config{}, errors.New("acme config: more than one YAML document")
	}
	js, err := yaml.YAMLToJSONStrict(data) // duplicate keys are errors
	if err != nil {
		return Config{}, fmt.Errorf("acme config: not YAML or JSON: %w", err)
	}
	var c Config
	if t := bytes.TrimSpace(js); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		if t[0] != '{' {
			return Config{}, errors.New("acme config: the document must be a mapping of fields")
		}
		// Case-sensitive, and every unknown or duplicate field is reported:
		// a typo must not silently fall back to a default.
		strict, err := kjson.UnmarshalStrict(js, &c)
		if err != nil {
			return Config{}, fmt.Errorf("acme config: %w", describeDecodeError(err))
		}
		if len(strict) > 0 {
			msgs := make([]string, len(strict))
			for i, e := range strict {
				msgs[i] = e.Error()
			}
			return Config{}, fmt.Errorf("acme config: %s (field names are case-sensitive; see docs/acme.md)", strings.Join(msgs, "; "))
		}
	}
	c = c.WithDefaults()
	if err := c.Validate(cat); err != nil {
		return Config{}, err
	}
	return c, nil
}

// multipleDocuments reports a "---" separator between two documents with
// content (sigs.k8s.io/yaml silently reads only the first).
func multipleDocuments(data []byte) bool {
	content, boundary := false, false
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimRight(line, " \t\r")
		switch {
		case t == "---" || strings.HasPrefix(t, "--- ") || t == "...":
			boundary = content
		case strings.TrimSpace(t) == "" || strings.HasPrefix(strings.TrimSpace(t), "#"):
		default:
			if boundary {
				return true
			}
			content = true
		}
	}
	return false
}

// describeDecodeError names the field of a type mismatch in the file's terms.
func describeDecodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %s: expected %s, got %s", te.Field, te.Type, te.Value)
	}
	return err
}

// Load reads and parses the configuration file at path (see Parse).
func Load(path string, cat Catalog) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("acme config: %w", err)
	}
	c, err := Parse(data, cat)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Hash is a digest of the configuration's content after defaults, so that
// the manager can tell a real change from a rewrite of the same settings.
func (c Config) Hash() string {
	// json.Marshal sorts map keys, so equal configurations give equal bytes.
	b, err := json.Marshal(c.WithDefaults())
	if err != nil {
		// Only a Duration could fail, and it cannot; keep the hash distinct anyway.
		b = []byte(err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Validate checks a configuration with defaults applied (see WithDefaults)
// against the providers of cat (see Parse) and reports every problem found,
// one per line.
func (c Config) Validate(cat Catalog) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	if err := checkDirectoryURL(c.DirectoryURL); err != nil {
		bad("directoryURL", "%v", err)
	}
	if c.Email != "" {
		if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
			bad("email", "%q is not a plain e-mail address", c.Email)
		}
	}
	if c.Profile != "" && !isToken(c.Profile) {
		bad("profile", "%q must be printable ASCII without spaces", c.Profile)
	}
	if !contains(KeyTypes, c.KeyType) {
		bad("keyType", "%q is not one of %s", c.KeyType, strings.Join(KeyTypes, ", "))
	}
	if c.CABundle != "" {
		if err := checkPEMCerts(c.CABundle); err != nil {
			bad("caBundle", "%v", err)
		}
	}
	if eab := c.ExternalAccountBinding; eab != nil {
		if eab.KeyID == "" {
			bad("externalAccountBinding.keyID", "required")
		}
		checkSecretRef(bad, "externalAccountBinding.hmacKeySecretRef", eab.HMACKeySecretRef.Name, eab.HMACKeySecretRef.Key, true)
	}
	checkSecretRef(bad, "accountSecret", c.AccountSecret, "", false)
	c.DNS.validate(cat, bad)
	c.Renewal.validate(bad)
	if c.SecretGracePeriod.Duration < 0 {
		bad("secretGracePeriod", "must not be negative")
	}
	for i, r := range c.Allow {
		field := fmt.Sprintf("allow[%d]", i)
		if len(r.Hosts) == 0 {
			bad(field+".hosts", "at least one host pattern is required")
		}
		for _, ns := range r.Namespaces {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				bad(field+".namespaces", "%q: %s", ns, strings.Join(msgs, "; "))
			}
		}
		for _, h := range r.Hosts {
			if err := checkHostPattern(h); err != nil {
				bad(field+".hosts", "%v", err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("acme config: %w", errors.Join(errs...))
	}
	return nil
}

func (d DNS) validate(cat Catalog, bad func(field, format string, args ...any)) {
	switch {
	case d.Provider == "" && cat == nil:
		bad("dns.provider", "required")
	case d.Provider == "":
		bad("dns.provider", "required; compiled in: %s", strings.Join(cat.Names(), ", "))
	case cat == nil:
	case !cat.Known(d.Provider):
		bad("dns.provider", "%q is not compiled in; available: %s", d.Provider, strings.Join(cat.Names(), ", "))
	default:
		if err := cat.CheckConfig(d.Provider, d.Config); err != nil {
			bad("dns.config", "%v", err)
		}
	}
	if d.CredentialsSecretRef != nil {
		checkSecretRef(bad, "dns.credentialsSecretRef", d.CredentialsSecretRef.Name, "", false)
	}
	for _, ns := range d.RecursiveNameservers {
		if err := checkNameserver(ns); err != nil {
			bad("dns.recursiveNameservers", "%v", err)
		}
	}
	pt, pi := d.PropagationTimeout.Duration, d.PollingInterval.Duration
	if pt <= 0 || pt > maxPropagationTimeout {
		bad("dns.propagationTimeout", "%s is outside (0, %s]", pt, maxPropagationTimeout)
	}
	if pi <= 0 || (pt > 0 && pi > pt) {
		bad("dns.pollingInterval", "%s must be positive and at most propagationTimeout (%s)", pi, pt)
	}
	if d.TTL < 0 || d.TTL > maxTTL {
		bad("dns.ttl", "%d is outside [0, %d] seconds", d.TTL, maxTTL)
	}
}

func (r Renewal) validate(bad func(field, format string, args ...any)) {
	if !(r.LifetimeFraction > 0 && r.LifetimeFraction < 1) { // also rejects NaN
		bad("renewal.lifetimeFraction", "%v must be strictly between 0 and 1", r.LifetimeFraction)
	}
	if r.MinBackoff.Duration <= 0 {
		bad("renewal.minBackoff", "must be positive")
	}
	if r.MaxBackoff.Duration < r.MinBackoff.Duration || r.MaxBackoff.Duration > maxBackoffLimit {
		bad("renewal.maxBackoff", "%s must be between minBackoff (%s) and %s", r.MaxBackoff.Duration, r.MinBackoff.Duration, maxBackoffLimit)
	}
	if r.MaxOrdersPerNamePerHour < 1 || r.MaxOrdersPerNamePerHour > maxOrdersPerNameHour {
		bad("renewal.maxOrdersPerNamePerHour", "%d is outside [1, %d]", r.MaxOrdersPerNamePerHour, maxOrdersPerNameHour)
	}
}

func checkDirectoryURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%q must be an absolute URL without user info or fragment", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: plain http is only allowed on loopback", s)
	default:
		return fmt.Errorf("%q: scheme must be https", s)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkPEMCerts(bundle string) error {
	rest := []byte(bundle)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n+1, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return errors.New("trailing data after the last PEM certificate")
	}
	return nil
}

func checkSecretRef(bad func(field, format string, args ...any), field, name, key string, needKey bool) {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		bad(field, "Secret name %q: %s", name, strings.Join(msgs, "; "))
	}
	if needKey {
		if msgs := validation.IsConfigMapKey(key); len(msgs) > 0 {
			bad(field, "Secret key %q: %s", key, strings.Join(msgs, "; "))
		}
	}
}

func checkNameserver(s string) error {
	host, port := s, "53"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: bad port", s)
	}
	if net.ParseIP(host) == nil && len(validation.IsDNS1123Subdomain(strings.TrimSuffix(host, "."))) > 0 {
		return fmt.Errorf("%q is not an IP address or host name (with optional :port)", s)
	}
	return nil
}

// checkHostPattern accepts a DNS name or "*." followed by one.
func checkHostPattern(p string) error {
	name := strings.TrimPrefix(p, "*.")
	if strings.Contains(name, "*") {
		return fmt.Errorf("%q: a wildcard is only allowed as the whole first label (\"*.example.com\")", p)
	}
	if p != strings.ToLower(p) {
		return fmt.Errorf("%q must be lower case", p)
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 || !strings.Contains(name, ".") && name != "localhost" {
		if len(msgs) == 0 {
			msgs = []string{"needs at least two labels"}
		}
		return fmt.Errorf("%q: %s", p, strings.Join(msgs, "; "))
	}
	return nil
}

// Allowed reports whether namespace may ask for a certificate naming host
// (see AllowRule). Without rules every request is allowed.
func (c Config) Allowed(namespace, host string) bool {
	if len(c.Allow) == 0 {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, r := range c.Allow {
		if len(r.Namespaces) > 0 && !contains(r.Namespaces, namespace) {
			continue
		}
		for _, p := range r.Hosts {
			if matchHost(p, host) {
				return true
			}
		}
	}
	return false
}

func matchHost(pattern, host string) bool {
	if pattern == host {
		return true // also "*.example.com" asking for itself
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok || !strings.HasPrefix(suffix, ".") {
		return false
	}
	label, ok := strings.CutSuffix(host, suffix)
	return ok && label != "" && !strings.ContainsAny(label, ".*")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func isToken(s string) bool {
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return len(s) <= 64
}

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON reads a Go duration string such as "90s" or "1h30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"90s\" or \"2m\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}
