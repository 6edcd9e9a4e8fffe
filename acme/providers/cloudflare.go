package providers

import (
	"errors"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/cloudflare"
)

func init() {
	register("cloudflare", &provider{
		doc: "Cloudflare; an API token with Zone:Read and DNS:Edit is preferred over the global key",
		keys: []Key{
			{Name: "CF_DNS_API_TOKEN", Secret: true, Aliases: []string{"CLOUDFLARE_DNS_API_TOKEN"}, Doc: "API token with DNS:Edit (and Zone:Read unless CF_ZONE_API_TOKEN is set)"},
			{Name: "CF_ZONE_API_TOKEN", Secret: true, Aliases: []string{"CLOUDFLARE_ZONE_API_TOKEN"}, Doc: "separate token with Zone:Read (optional)"},
			{Name: "CF_API_EMAIL", Aliases: []string{"CLOUDFLARE_EMAIL"}, Doc: "account e-mail, with CF_API_KEY (legacy)"},
			{Name: "CF_API_KEY", Secret: true, Aliases: []string{"CLOUDFLARE_API_KEY"}, Doc: "global API key (legacy)"},
			{Name: "CLOUDFLARE_BASE_URL", Doc: "API base URL (tests)"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := cloudflare.NewDefaultConfig()
			cfg.AuthToken = v.get("CF_DNS_API_TOKEN")
			cfg.ZoneToken = v.get("CF_ZONE_API_TOKEN")
			cfg.AuthEmail = v.get("CF_API_EMAIL")
			cfg.AuthKey = v.get("CF_API_KEY")
			cfg.BaseURL = v.get("CLOUDFLARE_BASE_URL")
			switch {
			case cfg.AuthToken != "" && (cfg.AuthEmail != "" || cfg.AuthKey != ""):
				return nil, errors.New("set either CF_DNS_API_TOKEN or CF_API_EMAIL with CF_API_KEY, not both")
			case cfg.AuthToken == "" && (cfg.AuthEmail == "" || cfg.AuthKey == ""):
				return nil, errors.New("credentials missing: set CF_DNS_API_TOKEN (or CF_API_EMAIL and CF_API_KEY) in the credentials Secret")
			}
			if cfg.ZoneToken == "" {
				cfg.ZoneToken = cfg.AuthToken
			}
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			if cfg.TTL < 120 {
				cfg.TTL = 120 // Cloudflare's minimum
			}
			return cloudflare.NewDNSProviderConfig(cfg)
		},
	})
}
