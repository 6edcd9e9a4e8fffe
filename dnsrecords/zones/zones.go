// Package zones builds the zone client of each DNS provider podtls can
// publish records with (rfc2136, route53, gcloud, cloudflare, azuredns), from the same
// settings the issuer configuration gives the provider for DNS-01.
package zones

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/dnsrecords"
)

// builders are the providers that can manage records; their names are
// lego's (issuerconfig.RecordProviders lists the same, checked by a test).
var builders = map[string]func(ctx context.Context, zone string, v map[string]string) (dnsrecords.Zone, error){
	"rfc2136": func(_ context.Context, zone string, v map[string]string) (dnsrecords.Zone, error) {
		return dnsrecords.RFC2136FromProvider(zone, v)
	},
	"route53":    newRoute53,
	"gcloud":     newGoogle,
	"cloudflare": newCloudflare,
	"azuredns":   newAzure,
}

// Names are the providers New can build, sorted.
func Names() []string {
	out := make([]string, 0, len(builders))
	for n := range builders {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// New builds the zone client of provider for zone from its credentials (a
// Secret's data) and config, keyed as for DNS-01. Errors name keys, never
// values.
func New(ctx context.Context, provider, zone string, credentials map[string][]byte, config map[string]string) (dnsrecords.Zone, error) {
	b, ok := builders[provider]
	if !ok {
		return nil, fmt.Errorf("provider %q cannot publish records; supported: %s", provider, strings.Join(Names(), ", "))
	}
	v, err := providers.Resolve(provider, credentials, config)
	if err != nil {
		return nil, err
	}
	z, err := b(ctx, strings.TrimSuffix(strings.ToLower(zone), "."), v)
	if err != nil {
		return nil, fmt.Errorf("%s records: %w", provider, err)
	}
	return z, nil
}

// fqdn adds the trailing dot the cloud APIs use.
func fqdn(name string) string { return strings.TrimSuffix(name, ".") + "." }

// published reports whether podtls reads and writes records of type t.
func published(t string) bool {
	switch t {
	case dnsrecords.TypeA, dnsrecords.TypeAAAA, dnsrecords.TypeCNAME, dnsrecords.TypeTXT:
		return true
	}
	return false
}

// inZone reports whether name is zone or below it.
func inZone(name, zone string) bool { return name == zone || strings.HasSuffix(name, "."+zone) }
