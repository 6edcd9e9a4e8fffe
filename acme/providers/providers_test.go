package providers

import (
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/challenge"
)

func TestNames(t *testing.T) {
	names := Names()
	for _, want := range []string{"route53", "cloudflare", "gcloud", "rfc2136"} {
		if !Known(want) {
			t.Errorf("%s not compiled in; have %v", want, names)
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("Names not sorted: %v", names)
		}
	}
	for _, n := range names {
		if Doc(n) == "" || len(Keys(n)) == 0 {
			t.Errorf("%s: no doc or keys", n)
		}
	}
	if Known("nope") || Keys("nope") != nil {
		t.Error("unknown provider reported as known")
	}
}

const secretValue = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw=="

func TestNew(t *testing.T) {
	tests := []struct {
		name     string
		provider string
		creds    map[string]string
		config   map[string]string
		wantErr  string // substring; empty: success
	}{
		{"rfc2136 ok", "rfc2136", map[string]string{"RFC2136_TSIG_KEY": "acme-key", "RFC2136_TSIG_SECRET": secretValue},
			map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}, ""},
		{"rfc2136 lego v4.34 names", "rfc2136", map[string]string{"DNSUPDATE_TSIG_KEY": "k", "DNSUPDATE_TSIG_SECRET": secretValue},
			map[string]string{"DNSUPDATE_NAMESERVER": "ns.example.com"}, ""},
		{"rfc2136 without TSIG", "rfc2136", nil, map[string]string{"RFC2136_NAMESERVER": "127.0.0.1"}, ""},
		{"rfc2136 missing nameserver", "rfc2136", map[string]string{"RFC2136_TSIG_KEY": "k", "RFC2136_TSIG_SECRET": secretValue}, nil,
			"RFC2136_NAMESERVER is required"},
		{"rfc2136 key without secret", "rfc2136", map[string]string{"RFC2136_TSIG_KEY": "k"},
			map[string]string{"RFC2136_NAMESERVER": "127.0.0.1"}, "must be set together"},
		{"rfc2136 secret in config", "rfc2136", nil,
			map[string]string{"RFC2136_NAMESERVER": "127.0.0.1", "RFC2136_TSIG_SECRET": secretValue}, "put it in the credentials Secret"},
		{"rfc2136 bad algorithm", "rfc2136", nil,
			map[string]string{"RFC2136_NAMESERVER": "127.0.0.1", "RFC2136_TSIG_ALGORITHM": "hmac-md4"}, "unsupported TSIG algorithm"},
		{"rfc2136 bad duration", "rfc2136", nil,
			map[string]string{"RFC2136_NAMESERVER": "127.0.0.1", "RFC2136_DNS_TIMEOUT": "soon"}, "RFC2136_DNS_TIMEOUT: not a duration"},
		{"unknown key named with allowed", "rfc2136", map[string]string{"RFC2136_TSIG_SECRT": secretValue},
			map[string]string{"RFC2136_NAMESERVER": "127.0.0.1"}, "unknown key RFC2136_TSIG_SECRT in the credentials Secret; allowed: "},
		{"set twice", "rfc2136", map[string]string{"RFC2136_NAMESERVER": "127.0.0.1"},
			map[string]string{"DNSUPDATE_NAMESERVER": "127.0.0.1"}, "set twice"},
		{"route53 ambient chain", "route53", nil, map[string]string{"AWS_REGION": "us-east-1"}, ""},
		{"route53 static keys", "route53", map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": secretValue},
			map[string]string{"AWS_HOSTED_ZONE_ID": "Z123", "AWS_MAX_RETRIES": "3"}, ""},
		{"route53 half keys", "route53", map[string]string{"AWS_SECRET_ACCESS_KEY": secretValue}, nil, "must be set together"},
		{"route53 bad bool", "route53", nil, map[string]string{"AWS_PRIVATE_ZONE": "maybe"}, "AWS_PRIVATE_ZONE: not a boolean"},
		{"cloudflare token", "cloudflare", map[string]string{"CF_DNS_API_TOKEN": secretValue}, nil, ""},
		{"cloudflare lego primary name", "cloudflare", map[string]string{"CLOUDFLARE_DNS_API_TOKEN": secretValue}, nil, ""},
		{"cloudflare nothing", "cloudflare", nil, nil, "credentials missing"},
		{"cloudflare token in config", "cloudflare", nil, map[string]string{"CF_DNS_API_TOKEN": secretValue}, "is a secret"},
		{"gcloud no project", "gcloud", nil, nil, "GCE_PROJECT is required"},
		{"gcloud bad key", "gcloud", map[string]string{"GCE_SERVICE_ACCOUNT": `{"project_id":"p","private_key":"` + secretValue + `"}`}, nil,
			"not a service account key"},
		{"gcloud key without project", "gcloud", map[string]string{"GCE_SERVICE_ACCOUNT": `{"type":"service_account"}`}, nil, "no project_id"},
		{"digitalocean missing", "digitalocean", nil, nil, "DO_AUTH_TOKEN is required (a key of the credentials Secret)"},
		{"digitalocean ok", "digitalocean", map[string]string{"DO_AUTH_TOKEN": secretValue}, nil, ""},
		{"hetzner ok", "hetzner", map[string]string{"HETZNER_API_TOKEN": secretValue}, nil, ""},
		{"hetzner missing", "hetzner", nil, nil, "credentials missing"},
		{"httpreq ok", "httpreq", map[string]string{"HTTPREQ_PASSWORD": secretValue},
			map[string]string{"HTTPREQ_ENDPOINT": "https://dns-hook.example.com", "HTTPREQ_USERNAME": "u"}, ""},
		{"httpreq bad url", "httpreq", nil, map[string]string{"HTTPREQ_ENDPOINT": "ftp://x"}, "must be an http(s) URL"},
		// azuredns lists the zones at construction (network), so only offline errors here.
		{"azuredns bad auth method", "azuredns", map[string]string{"AZURE_CLIENT_SECRET": secretValue},
			map[string]string{"AZURE_AUTH_METHOD": "cli"}, "AZURE_AUTH_METHOD"},
		{"azuredns bad env", "azuredns", nil, map[string]string{"AZURE_ENVIRONMENT": "mars"}, "AZURE_ENVIRONMENT"},
		{"unknown provider", "nope", nil, nil, `unknown DNS provider "nope"; compiled in: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := map[string][]byte{}
			for k, v := range tt.creds {
				creds[k] = []byte(v)
			}
			p, err := New(tt.provider, creds, tt.config, Common{TTL: 120, PropagationTimeout: 20 * time.Second, PollingInterval: 500 * time.Millisecond})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if p == nil {
					t.Fatal("New returned nil provider")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secretValue) {
				t.Fatalf("error leaks the secret value: %v", err)
			}
		})
	}
}

func TestCommonSettingsReachTheProvider(t *testing.T) {
	p, err := New("rfc2136", nil, map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:15353"},
		Common{TTL: 30, PropagationTimeout: 20 * time.Second, PollingInterval: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pt, ok := p.(challenge.ProviderTimeout)
	if !ok {
		t.Fatal("rfc2136 provider has no Timeout")
	}
	if timeout, interval := pt.Timeout(); timeout != 20*time.Second || interval != 250*time.Millisecond {
		t.Errorf("Timeout() = %s, %s", timeout, interval)
	}
	seq, ok := p.(interface{ Sequential() time.Duration })
	if !ok || seq.Sequential() != 0 {
		t.Errorf("rfc2136 must not pause between names")
	}
}

func TestCheckConfig(t *testing.T) {
	if err := CheckConfig("rfc2136", map[string]string{"RFC2136_NAMESERVER": "10.0.0.1:53", "RFC2136_TSIG_ALGORITHM": "hmac-sha256"}); err != nil {
		t.Errorf("valid config: %v", err)
	}
	if err := CheckConfig("rfc2136", map[string]string{"RFC2136_TSIG_SECRET": "x"}); err == nil {
		t.Error("secret in config accepted")
	}
	if err := CheckConfig("route53", map[string]string{"AWS_REGON": "x"}); err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("typo: %v (want the allowed keys listed)", err)
	}
	if err := CheckConfig("nope", nil); err == nil {
		t.Error("unknown provider accepted")
	}
}
