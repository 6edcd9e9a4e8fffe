package providers

import (
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/digitalocean"
)

func init() {
	register("digitalocean", &provider{
		doc: "DigitalOcean DNS",
		keys: []Key{
			{Name: "DO_AUTH_TOKEN", Secret: true, Required: true, Doc: "API token with write scope"},
			{Name: "DO_API_URL", Doc: "API base URL (tests)"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := digitalocean.NewDefaultConfig()
			cfg.AuthToken = v.get("DO_AUTH_TOKEN")
			if u := v.get("DO_API_URL"); u != "" {
				cfg.BaseURL = u
			}
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			return digitalocean.NewDNSProviderConfig(cfg)
		},
	})
}
