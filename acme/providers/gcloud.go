package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/gcloud"
	"golang.org/x/oauth2/google"
)

// clouddnsScope is read-write access to Cloud DNS only.
const clouddnsScope = "https://www.googleapis.com/auth/ndev.clouddns.readwrite"

func init() {
	register("gcloud", &provider{
		doc: "Google Cloud DNS; a service account key, or ambient credentials (GKE Workload Identity) with GCE_PROJECT",
		keys: []Key{
			{Name: "GCE_SERVICE_ACCOUNT", Secret: true, Doc: "service account key JSON (optional: ambient credentials otherwise)"},
			{Name: "GCE_PROJECT", Doc: "project of the zone (default: project_id of the key; required without a key)"},
			{Name: "GCE_ZONE_ID", Doc: "managed zone name (default: found from the name)"},
			{Name: "GCE_ALLOW_PRIVATE_ZONE", Doc: "true to allow private zones"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := gcloud.NewDefaultConfig()
			cfg.Project = v.get("GCE_PROJECT")
			cfg.ZoneID = v.get("GCE_ZONE_ID")
			cfg.AllowPrivateZone = v.boolean("GCE_ALLOW_PRIVATE_ZONE")
			ctx := context.Background() // token refreshes outlive any one call
			if key := v.get("GCE_SERVICE_ACCOUNT"); key != "" {
				if cfg.Project == "" {
					var sa struct {
						ProjectID string `json:"project_id"`
					}
					if json.Unmarshal([]byte(key), &sa) != nil || sa.ProjectID == "" {
						return nil, errors.New("GCE_SERVICE_ACCOUNT has no project_id and GCE_PROJECT is not set")
					}
					cfg.Project = sa.ProjectID
				}
				jwt, err := google.JWTConfigFromJSON([]byte(key), clouddnsScope)
				if err != nil {
					// The parser's message may quote the key: keep it out.
					return nil, errors.New("GCE_SERVICE_ACCOUNT is not a service account key in JSON")
				}
				cfg.HTTPClient = jwt.Client(ctx)
			} else {
				if cfg.Project == "" {
					return nil, errors.New("GCE_PROJECT is required when GCE_SERVICE_ACCOUNT is not set")
				}
				client, err := google.DefaultClient(ctx, clouddnsScope)
				if err != nil {
					return nil, fmt.Errorf("ambient Google credentials: %w", err)
				}
				cfg.HTTPClient = client
			}
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			return gcloud.NewDNSProviderConfig(cfg)
		},
	})
}
