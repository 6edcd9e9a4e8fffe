package providers

import (
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/azuredns"
)

func init() {
	register("azuredns", &provider{
		doc: "Azure DNS; a service principal secret, or AKS workload identity / managed identity",
		keys: []Key{
			{Name: "AZURE_CLIENT_ID", Doc: "application (client) ID"},
			{Name: "AZURE_CLIENT_SECRET", Secret: true, Doc: "client secret (service principal)"},
			{Name: "AZURE_TENANT_ID", Doc: "directory (tenant) ID"},
			{Name: "AZURE_SUBSCRIPTION_ID", Doc: "subscription of the zone (default: discovered)"},
			{Name: "AZURE_RESOURCE_GROUP", Doc: "resource group of the zone (default: discovered)"},
			{Name: "AZURE_ZONE_NAME", Doc: "zone name (default: found from the name)"},
			{Name: "AZURE_PRIVATE_ZONE", Doc: "true for a private DNS zone"},
			{Name: "AZURE_ENVIRONMENT", Doc: "public (default), china or usgovernment"},
			{Name: "AZURE_AUTH_METHOD", Doc: "env, wli (workload identity), msi, or empty for the SDK's default chain"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := azuredns.NewDefaultConfig()
			switch e := v.get("AZURE_ENVIRONMENT"); e {
			case "", "public":
				cfg.Environment = cloud.AzurePublic
			case "china":
				cfg.Environment = cloud.AzureChina
			case "usgovernment":
				cfg.Environment = cloud.AzureGovernment
			default:
				return nil, fmt.Errorf("AZURE_ENVIRONMENT %q: want public, china or usgovernment", e)
			}
			cfg.ClientID = v.get("AZURE_CLIENT_ID")
			cfg.ClientSecret = v.get("AZURE_CLIENT_SECRET")
			cfg.TenantID = v.get("AZURE_TENANT_ID")
			cfg.SubscriptionID = v.get("AZURE_SUBSCRIPTION_ID")
			cfg.ResourceGroup = v.get("AZURE_RESOURCE_GROUP")
			cfg.ZoneName = v.get("AZURE_ZONE_NAME")
			cfg.PrivateZone = v.boolean("AZURE_PRIVATE_ZONE")
			switch m := v.get("AZURE_AUTH_METHOD"); m {
			case "", "env", "wli", "msi":
				cfg.AuthMethod = m
			default:
				return nil, fmt.Errorf("AZURE_AUTH_METHOD %q: want env, wli, msi or empty", m)
			}
			if cfg.ClientSecret != "" && cfg.AuthMethod == "" {
				cfg.AuthMethod = "env" // a given secret must win over ambient identities
			}
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			return azuredns.NewDNSProviderConfig(cfg)
		},
	})
}
