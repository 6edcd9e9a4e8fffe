package issuerconfig

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/acme/providers"
)

const example = `
directoryURL: https://acme.example.test/directory
email: ops@example.com
profile: default
keyType: ecdsa-p384
externalAccountBinding: {keyID: kid, hmacKeySecretRef: {name: podtls-acme-eab}}
dns:
  provider: rfc2136
  credentialsSecretRef: {name: podtls-dns-credentials}
  config: {RFC2136_NAMESERVER: "10.250.0.1:53", RFC2136_TSIG_ALGORITHM: hmac-sha256}
  recursiveNameservers: ["10.250.0.1:53", "10.250.0.2"]
  authoritativeNSCheck: false
  propagationTimeout: 30s
  pollingInterval: 500ms
renewal: {ari: false, lifetimeFraction: 0.5, minBackoff: 30s, maxBackoff: 1h, maxOrdersPerNamePerHour: 5}
secretGracePeriod: 1h
allow: [{namespaces: [demo], hosts: ["*.demo.example.test", "demo.example.test"]}]
`

func TestParseExample(t *testing.T) {
	c, err := Parse([]byte(example), providers.Catalog)
	if err != nil {
		t.Fatal(err)
	}
	if c.DirectoryURL != "https://acme.example.test/directory" || c.KeyType != KeyECDSAP384 || c.Profile != "default" {
		t.Errorf("top-level fields: %+v", c)
	}
	if c.ExternalAccountBinding.HMACKeySecretRef.Key != DefaultEABKey {
		t.Errorf("EAB key default: %q", c.ExternalAccountBinding.HMACKeySecretRef.Key)
	}
	if c.AccountSecret != DefaultAccountSecret {
		t.Errorf("accountSecret default: %q", c.AccountSecret)
	}
	d := c.DNS
	if d.Provider != "rfc2136" || d.CredentialsSecretRef.Name != "podtls-dns-credentials" || d.Config["RFC2136_NAMESERVER"] != "10.250.0.1:53" ||
		*d.AuthoritativeNSCheck || d.PropagationTimeout.Duration != 30*time.Second || d.PollingInterval.Duration != 500*time.Millisecond ||
		len(d.RecursiveNameservers) != 2 {
		t.Errorf("dns: %+v", d)
	}
	r := c.Renewal
	if *r.ARI || r.LifetimeFraction != 0.5 || r.MinBackoff.Duration != 30*time.Second || r.MaxBackoff.Duration != time.Hour || r.MaxOrdersPerNamePerHour != 5 {
		t.Errorf("renewal: %+v", r)
	}
	if c.SecretGracePeriod.Duration != time.Hour || len(c.Allow) != 1 {
		t.Errorf("grace/allow: %+v", c)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`{"dns": {"provider": "cloudflare"}}`), providers.Catalog) // JSON works too
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DNS.Provider = "cloudflare"
	if c.Hash() != want.Hash() {
		t.Errorf("Parse with only a provider = %+v, want defaults %+v", c, want)
	}
	if c.DirectoryURL != LetsEncryptStaging || c.KeyType != KeyECDSAP256 || !*c.DNS.AuthoritativeNSCheck || !*c.Renewal.ARI ||
		math.Abs(c.Renewal.LifetimeFraction-2.0/3) > 1e-9 || c.Renewal.MaxOrdersPerNamePerHour != 3 ||
		c.Renewal.MinBackoff.Duration != time.Minute || c.Renewal.MaxBackoff.Duration != 6*time.Hour ||
		c.SecretGracePeriod.Duration != 24*time.Hour || c.DNS.PropagationTimeout.Duration != 2*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"empty", ``, "dns.provider: required"},
		{"not a mapping", `[1, 2]`, "must be a mapping"},
		{"bad yaml", "dns: [", "not YAML or JSON"},
		{"two documents", "dns: {provider: cloudflare}\n---\ndns: {provider: rfc2136}\n", "more than one YAML document"},
		{"duplicate key", "dns: {provider: cloudflare}\ndns: {provider: rfc2136}\n", "not YAML or JSON"},
		{"duplicate JSON key", `{"dns": {"provider": "cloudflare", "provider": "route53"}}`, "not YAML or JSON"},
		{"unknown field", "dns: {provider: rfc2136, config: {RFC2136_NAMESERVER: x}}\ndirectoryUrl: https://x/", `unknown field "directoryUrl"`},
		{"unknown nested field", "dns: {provider: rfc2136, propagation: 1s}", `unknown field "dns.propagation"`},
		{"wrong type", "dns: {provider: rfc2136, ttl: soon}", "field dns.ttl"},
		{"number duration", "dns: {provider: cloudflare, pollingInterval: 5}", "duration must be a string"},
		{"bad duration", "dns: {provider: cloudflare, pollingInterval: 5 s}", `duration "5 s"`},
		{"http directory", "directoryURL: http://acme.example.com/dir\ndns: {provider: cloudflare}", "plain http is only allowed on loopback"},
		{"ftp directory", "directoryURL: ftp://acme.example.com/dir\ndns: {provider: cloudflare}", "scheme must be https"},
		{"relative directory", "directoryURL: /dir\ndns: {provider: cloudflare}", "absolute URL"},
		{"bad email", "email: 'Ops <ops@example.com>'\ndns: {provider: cloudflare}", "email"},
		{"bad key type", "keyType: ed25519\ndns: {provider: cloudflare}", `keyType: "ed25519" is not one of`},
		{"bad ca bundle", "caBundle: nope\ndns: {provider: cloudflare}", "caBundle: no PEM certificate"},
		{"eab without kid", "externalAccountBinding: {hmacKeySecretRef: {name: eab}}\ndns: {provider: cloudflare}", "externalAccountBinding.keyID: required"},
		{"bad account secret", "accountSecret: Not_A_Name\ndns: {provider: cloudflare}", "accountSecret"},
		{"unknown provider", "dns: {provider: godaddy}", `"godaddy" is not compiled in; available: `},
		{"secret in dns.config", "dns: {provider: rfc2136, config: {RFC2136_TSIG_SECRET: abc}}", "put it in the credentials Secret"},
		{"unknown dns.config key", "dns: {provider: rfc2136, config: {RFC2136_SERVER: abc}}", "unknown key RFC2136_SERVER"},
		{"bad nameserver", "dns: {provider: cloudflare, recursiveNameservers: ['1.1.1.1:99999']}", "bad port"},
		{"polling > timeout", "dns: {provider: cloudflare, propagationTimeout: 1s, pollingInterval: 2s}", "dns.pollingInterval"},
		{"negative timeout", "dns: {provider: cloudflare, propagationTimeout: -1s}", "dns.propagationTimeout"},
		{"huge timeout", "dns: {provider: cloudflare, propagationTimeout: 2h}", "dns.propagationTimeout"},
		{"fraction 1", "dns: {provider: cloudflare}\nrenewal: {lifetimeFraction: 1}", "renewal.lifetimeFraction"},
		{"fraction negative", "dns: {provider: cloudflare}\nrenewal: {lifetimeFraction: -0.5}", "renewal.lifetimeFraction"},
		{"max < min backoff", "dns: {provider: cloudflare}\nrenewal: {minBackoff: 1h, maxBackoff: 1m}", "renewal.maxBackoff"},
		{"orders cap", "dns: {provider: cloudflare}\nrenewal: {maxOrdersPerNamePerHour: -1}", "renewal.maxOrdersPerNamePerHour"},
		{"negative grace", "dns: {provider: cloudflare}\nsecretGracePeriod: -1h", "secretGracePeriod"},
		{"allow without hosts", "dns: {provider: cloudflare}\nallow: [{namespaces: [a]}]", "allow[0].hosts: at least one"},
		{"allow bad wildcard", "dns: {provider: cloudflare}\nallow: [{hosts: ['a.*.example.com']}]", "wildcard is only allowed"},
		{"allow upper case", "dns: {provider: cloudflare}\nallow: [{hosts: ['Shop.example.com']}]", "lower case"},
		{"allow single label", "dns: {provider: cloudflare}\nallow: [{hosts: ['com']}]", "two labels"},
		{"allow bad namespace", "dns: {provider: cloudflare}\nallow: [{namespaces: [Demo], hosts: [a.example.com]}]", "allow[0].namespaces"},
		{"records with a provider that cannot", "dns: {provider: digitalocean}\nrecords: {enabled: true, zone: example.com}", `records.enabled: provider "digitalocean" cannot publish records yet`},
		{"records credentials without a name", "dns: {provider: rfc2136, config: {RFC2136_NAMESERVER: 10.0.0.1}}\nrecords: {enabled: true, zone: example.com, credentialsSecretRef: {name: \"\"}}", "records.credentialsSecretRef"},
		{"records without a zone", "dns: {provider: rfc2136}\nrecords: {enabled: true}", "records.zone"},
		{"records ttl", "dns: {provider: rfc2136}\nrecords: {enabled: true, zone: example.com, ttl: 5}", "records.ttl: 5 is out of range"},
		{"records owner", "dns: {provider: rfc2136}\nrecords: {enabled: true, zone: example.com, ownerID: 'a,b'}", "records.ownerID"},
		{"records grace", "dns: {provider: rfc2136}\nrecords: {enabled: true, zone: example.com, gracePeriod: -1m}", "records.gracePeriod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), providers.Catalog)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRecordsDefaults(t *testing.T) {
	c, err := Parse([]byte("dns: {provider: rfc2136}\nrecords: {enabled: true, zone: example.test.}"), providers.Catalog)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Records; !r.Enabled || r.TTL != DefaultRecordTTL || r.OwnerID != DefaultRecordOwner || r.GracePeriod.Duration != DefaultRecordGrace {
		t.Fatalf("records %+v", r)
	}
	if c, err := Parse([]byte("dns: {provider: cloudflare}"), providers.Catalog); err != nil || c.Records.Enabled {
		t.Fatalf("records on by default: %+v %v", c.Records, err)
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Default()
	c.KeyType = "dsa"
	c.Renewal.LifetimeFraction = 2
	err := c.Validate(providers.Catalog)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"keyType", "renewal.lifetimeFraction", "dns.provider"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestParseDocumentMarkers(t *testing.T) {
	for _, doc := range []string{"---\ndns: {provider: cloudflare}\n", "# c\n---\ndns: {provider: cloudflare}\n...\n", "dns: {provider: cloudflare}\n---\n"} {
		if _, err := Parse([]byte(doc), providers.Catalog); err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
		}
	}
}

func TestDirectoryURLLoopback(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:14000/dir", "http://localhost/dir", "http://[::1]:14000/dir", "https://127.0.0.1:14000/dir"} {
		if err := checkDirectoryURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.1/dir", "http://localhost.example.com/dir", "https://user:pw@acme.example.com/dir"} {
		if err := checkDirectoryURL(u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

func TestAllowed(t *testing.T) {
	c := Config{Allow: []AllowRule{
		{Namespaces: []string{"demo"}, Hosts: []string{"*.demo.example.test", "demo.example.test"}},
		{Hosts: []string{"status.example.test"}}, // any namespace
	}}
	tests := []struct {
		ns, host string
		want     bool
	}{
		{"demo", "demo.example.test", true},
		{"demo", "shop.demo.example.test", true},
		{"demo", "SHOP.demo.example.test.", true}, // case and trailing dot do not matter
		{"demo", "*.demo.example.test", true},     // the wildcard name itself
		{"demo", "a.b.demo.example.test", false},  // one label only
		{"demo", "*.b.demo.example.test", false},
		{"demo", "example.test", false},
		{"demo", "xdemo.example.test", false},
		{"other", "shop.demo.example.test", false}, // namespace not listed
		{"other", "status.example.test", true},
		{"demo", "status.example.test", true},
		{"demo", "", false},
	}
	for _, tt := range tests {
		if got := c.Allowed(tt.ns, tt.host); got != tt.want {
			t.Errorf("Allowed(%q, %q) = %v, want %v", tt.ns, tt.host, got, tt.want)
		}
	}
	if !(Config{}).Allowed("any", "anything.example.com") {
		t.Error("no rules must allow everything")
	}
}

func TestHash(t *testing.T) {
	a, err := Parse([]byte(example), providers.Catalog)
	if err != nil {
		t.Fatal(err)
	}
	// Same content, other order and format: same hash.
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(js, providers.Catalog)
	if err != nil {
		t.Fatalf("re-parse own JSON: %v", err)
	}
	if a.Hash() != b.Hash() {
		t.Error("round trip changed the hash")
	}
	// Explicit defaults hash like omitted ones.
	d := Default()
	d.DNS.Provider = "cloudflare"
	e := Config{DNS: DNS{Provider: "cloudflare"}}
	if d.Hash() != e.Hash() {
		t.Error("explicit defaults hash differently from omitted ones")
	}
	b.DNS.Config = map[string]string{"RFC2136_NAMESERVER": "10.250.0.9:53", "RFC2136_TSIG_ALGORITHM": "hmac-sha256"}
	if a.Hash() == b.Hash() {
		t.Error("changed nameserver, same hash")
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Duration{90 * time.Second})
	if err != nil || string(b) != `"1m30s"` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"1h30m"`), &d); err != nil || d.Duration != 90*time.Minute {
		t.Fatalf("Unmarshal = %v, %v", d, err)
	}
	for _, bad := range []string{`90`, `"90"`, `null`, `{}`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil && bad != `null` {
			t.Errorf("Unmarshal(%s) accepted", bad)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, providers.Catalog); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), providers.Catalog); err == nil {
		t.Error("missing file accepted")
	}
	if err := os.WriteFile(path, []byte("dns: {provider: nope}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, providers.Catalog); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load error %v does not name the file", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"dns":{"provider":"cloudflare"}}`))
	f.Add([]byte("dns: {provider: rfc2136, config: {RFC2136_NAMESERVER: x}}\nallow: [{hosts: ['*.a.b']}]"))
	f.Add([]byte("renewal: {lifetimeFraction: .nan}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, providers.Catalog)
		if err != nil {
			return
		}
		// What Parse accepts is valid, defaulted, and survives a round trip.
		if err := c.Validate(providers.Catalog); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		if c.WithDefaults().Hash() != c.Hash() {
			t.Fatal("Parse result is not defaulted")
		}
		js, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := Parse(js, providers.Catalog)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", js, err)
		}
		if c2.Hash() != c.Hash() {
			t.Fatalf("round trip changed the config:\n%s", js)
		}
		_ = c.Allowed("demo", "a.example.com")
	})
}

// TestParseWithoutCatalog: a reader that does not run the providers (the
// podtls CLI) gets every check but the provider's own.
func TestParseWithoutCatalog(t *testing.T) {
	c, err := Parse([]byte("dns:\n  provider: not-compiled-in\n  config: {ANY_KEY: x}\n"), nil)
	if err != nil {
		t.Fatalf("Parse(nil catalog): %v", err)
	}
	if c.DNS.Provider != "not-compiled-in" || c.AccountSecret != DefaultAccountSecret || c.DirectoryURL == "" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if _, err := Parse([]byte("email: a@b.c\n"), nil); err == nil || !strings.Contains(err.Error(), "dns.provider: required") {
		t.Errorf("no provider: got %v, want dns.provider: required", err)
	}
	if _, err := Parse([]byte("dns: {provider: x}\ndirectoryURL: ftp://x\n"), nil); err == nil || !strings.Contains(err.Error(), "directoryURL") {
		t.Errorf("bad directory: got %v", err)
	}
}
