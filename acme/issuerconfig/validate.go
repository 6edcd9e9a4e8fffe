package issuerconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

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
	c.Records.validate(c.DNS.Provider, bad)
	if len(errs) > 0 {
		return fmt.Errorf("acme config: %w", errors.Join(errs...))
	}
	return nil
}

// RecordProviders are the DNS providers podtls can publish records with.
var RecordProviders = []string{"azuredns", "cloudflare", "gcloud", "rfc2136", "route53"}

func (r Records) validate(provider string, bad func(field, format string, args ...any)) {
	if !r.Enabled {
		return
	}
	if !contains(RecordProviders, provider) {
		bad("records.enabled", "provider %q cannot publish records yet (supported: %s)", provider, strings.Join(RecordProviders, ", "))
	}
	zone := strings.TrimSuffix(r.Zone, ".")
	if msgs := validation.IsDNS1123Subdomain(zone); zone == "" || len(msgs) > 0 {
		bad("records.zone", "%q is not a DNS zone name", r.Zone)
	}
	if r.TTL < 30 || r.TTL > 86400 {
		bad("records.ttl", "%d is out of range; want 30 to 86400 seconds", r.TTL)
	}
	if len(r.OwnerID) > 63 || !isToken(r.OwnerID) || strings.ContainsAny(r.OwnerID, ",=\"") {
		bad("records.ownerID", "%q: want 1-63 printable characters without spaces, ',', '=' or quotes", r.OwnerID)
	}
	if r.GracePeriod.Duration < 0 {
		bad("records.gracePeriod", "must not be negative")
	}
	if r.CredentialsSecretRef != nil {
		checkSecretRef(bad, "records.credentialsSecretRef", r.CredentialsSecretRef.Name, "", false)
	}
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
