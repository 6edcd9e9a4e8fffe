package providers

import (
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/hetzner"
)

func init() {
	register("hetzner", &provider{
		doc: "Hetzner (Cloud API token; the legacy DNS API key still works)",
		keys: []Key{
			{Name: "HETZNER_API_TOKEN", Secret: true, Doc: "Hetzner Cloud API token"},
			{Name: "HETZNER_API_KEY", Secret: true, Doc: "legacy Hetzner DNS API key (deprecated)"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := hetzner.NewDefaultConfig()
			cfg.APIToken = v.get("HETZNER_API_TOKEN")
			cfg.APIKey = v.get("HETZNER_API_KEY")
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			if cfg.TTL < 60 {
				cfg.TTL = 60 // Hetzner's minimum
			}
			return hetzner.NewDNSProviderConfig(cfg)
		},
	})
}
