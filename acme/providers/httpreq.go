package providers

import (
	"fmt"
	"net/url"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/httpreq"
)

func init() {
	register("httpreq", &provider{
		doc: "any DNS behind a small HTTP service of your own (POST /present and /cleanup)",
		keys: []Key{
			{Name: "HTTPREQ_ENDPOINT", Required: true, Doc: "base URL of the service"},
			{Name: "HTTPREQ_MODE", Doc: `"" (fqdn+value) or RAW (domain, token, keyAuth)`},
			{Name: "HTTPREQ_USERNAME", Doc: "basic-auth user"},
			{Name: "HTTPREQ_PASSWORD", Secret: true, Doc: "basic-auth password"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := httpreq.NewDefaultConfig()
			u, err := url.Parse(v.get("HTTPREQ_ENDPOINT"))
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return nil, fmt.Errorf("HTTPREQ_ENDPOINT must be an http(s) URL")
			}
			cfg.Endpoint = u
			cfg.Mode = v.get("HTTPREQ_MODE")
			if cfg.Mode != "" && cfg.Mode != "RAW" {
				return nil, fmt.Errorf("HTTPREQ_MODE must be empty or RAW")
			}
			cfg.Username = v.get("HTTPREQ_USERNAME")
			cfg.Password = v.get("HTTPREQ_PASSWORD")
			c.apply(nil, &cfg.PropagationTimeout, &cfg.PollingInterval)
			return httpreq.NewDNSProviderConfig(cfg)
		},
	})
}
