// Package issuerconfig is the ACME issuer configuration of podtls-controller: a
// YAML (or JSON) file given by --acme-config, which the Helm chart renders
// from its values into the ConfigMap podtls-acme and mounts. The controller
// reads it at start and again whenever the file changes. No secret is in the
// file: credentials are referenced by Secret name in the controller's namespace.
package issuerconfig

import "time"

// Well-known directory URLs.
const (
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
)

// Config is one ACME issuer. Zero fields take the defaults of Default.
type Config struct {
	// DirectoryURL of any RFC 8555 server. Default: Let's Encrypt staging.
	DirectoryURL string `json:"directoryURL,omitempty"`
	// Email is the account contact (optional).
	Email string `json:"email,omitempty"`
	// Profile asks the server for an ACME profile (draft-aaron-acme-profiles),
	// e.g. "tlsserver" or "shortlived" at Let's Encrypt. Empty: the server's default.
	Profile string `json:"profile,omitempty"`
	// KeyType of certificate keys: ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-4096.
	KeyType string `json:"keyType,omitempty"`
	// CABundle is PEM roots that verify the ACME server's HTTPS endpoint, for
	// private ACME servers; empty: the system roots.
	CABundle string `json:"caBundle,omitempty"`
	// ExternalAccountBinding, for servers that require it (ZeroSSL, Google, ...).
	ExternalAccountBinding *ExternalAccountBinding `json:"externalAccountBinding,omitempty"`
	// AccountSecret in the controller's namespace keeps the account key.
	// Default "podtls-acme-account"; created if missing.
	AccountSecret string `json:"accountSecret,omitempty"`
	// DNS is the DNS-01 solver.
	DNS DNS `json:"dns"`
	// Renewal tunes when certificates are renewed and how failures back off.
	Renewal Renewal `json:"renewal,omitempty"`
	// SecretGracePeriod: a certificate Secret no pod uses any more is deleted
	// after this long. Default 24h.
	SecretGracePeriod Duration `json:"secretGracePeriod,omitempty"`
	// Allow restricts which namespaces may ask for which names. Empty: any
	// namespace may ask for any name the DNS provider can solve (fine for a
	// single-tenant cluster; set it on shared clusters).
	Allow []AllowRule `json:"allow,omitempty"`
	// Records publishes address records for the external hosts of exposed
	// workloads through the same DNS provider (docs/dns-records.md).
	Records Records `json:"records,omitempty"`
}

// Records configures the DNS records podtls publishes for external hosts.
type Records struct {
	// Enabled turns publishing on (default off).
	Enabled bool `json:"enabled,omitempty"`
	// Zone is the zone podtls manages records in, e.g. "example.com".
	Zone string `json:"zone,omitempty"`
	// TTL of the records in seconds (default 300; 30 to 86400).
	TTL int64 `json:"ttl,omitempty"`
	// OwnerID marks podtls's records in their ownership TXT records (default
	// "podtls"); give each cluster sharing a zone its own.
	OwnerID string `json:"ownerID,omitempty"`
	// GracePeriod keeps a record nothing asks for any more (default 10m).
	GracePeriod Duration `json:"gracePeriod,omitempty"`
	// CredentialsSecretRef names a Secret with the provider's keys for
	// records (same names as dns.credentialsSecretRef), for a key allowed
	// more than the DNS-01 key (address records, zone reads). Default: the
	// DNS-01 credentials.
	CredentialsSecretRef *SecretRef `json:"credentialsSecretRef,omitempty"`
}

// ExternalAccountBinding holds the key ID and a reference to the HMAC key.
type ExternalAccountBinding struct {
	KeyID string `json:"keyID"`
	// HMACKeySecretRef names the Secret (controller namespace) and key holding
	// the base64url HMAC key exactly as the CA issued it.
	HMACKeySecretRef SecretKeyRef `json:"hmacKeySecretRef"`
}

// SecretKeyRef points at one key of a Secret in the controller's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key,omitempty"`
}

// SecretRef points at a Secret in the controller's namespace.
type SecretRef struct {
	Name string `json:"name"`
}

// DNS configures the DNS-01 challenge.
type DNS struct {
	// Provider is the lego provider name: route53, cloudflare, gcloud,
	// rfc2136, ... (see docs/acme.md for the compiled-in set).
	Provider string `json:"provider"`
	// CredentialsSecretRef names a Secret whose keys are the provider's lego
	// environment variable names, e.g. CF_DNS_API_TOKEN or RFC2136_TSIG_SECRET.
	// Optional for providers that find ambient credentials (route53 with IRSA,
	// gcloud with workload identity).
	CredentialsSecretRef *SecretRef `json:"credentialsSecretRef,omitempty"`
	// Config holds the provider's non-secret settings, keyed by the same lego
	// environment variable names, e.g. AWS_REGION, RFC2136_NAMESERVER.
	Config map[string]string `json:"config,omitempty"`
	// RecursiveNameservers ("host:port") used to check propagation; empty:
	// the system resolver's.
	RecursiveNameservers []string `json:"recursiveNameservers,omitempty"`
	// AuthoritativeNSCheck waits until every authoritative name server of the
	// zone answers with the record (default true). Turn it off where port 53
	// of those servers is unreachable; the recursive check still runs.
	AuthoritativeNSCheck *bool `json:"authoritativeNSCheck,omitempty"`
	// PropagationTimeout bounds the wait for the TXT record (default 2m).
	PropagationTimeout Duration `json:"propagationTimeout,omitempty"`
	// PollingInterval between propagation checks (default 2s).
	PollingInterval Duration `json:"pollingInterval,omitempty"`
	// TTL of the TXT record in seconds (default: the provider's).
	TTL int `json:"ttl,omitempty"`
}

// Renewal tunes renewal and failure handling.
type Renewal struct {
	// ARI uses the server's ACME Renewal Information (RFC 9773) when it offers
	// it (default true); otherwise renewal happens at LifetimeFraction.
	ARI *bool `json:"ari,omitempty"`
	// LifetimeFraction of the validity after which to renew (default 2/3).
	LifetimeFraction float64 `json:"lifetimeFraction,omitempty"`
	// MinBackoff and MaxBackoff bound the jittered exponential backoff after
	// failures (default 1m and 6h).
	MinBackoff Duration `json:"minBackoff,omitempty"`
	MaxBackoff Duration `json:"maxBackoff,omitempty"`
	// MaxOrdersPerNamePerHour caps new orders for any single name (default 3),
	// so no configuration error can hammer the ACME server.
	MaxOrdersPerNamePerHour int `json:"maxOrdersPerNamePerHour,omitempty"`
}

// AllowRule lets Namespaces (exact names; empty = all) ask for Hosts
// (exact names or "*.suffix" patterns, where "*.example.com" matches
// "a.example.com" and the wildcard name "*.example.com" itself, but not
// "example.com" or "a.b.example.com").
type AllowRule struct {
	Namespaces []string `json:"namespaces,omitempty"`
	Hosts      []string `json:"hosts"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "2m").
type Duration struct{ time.Duration }
