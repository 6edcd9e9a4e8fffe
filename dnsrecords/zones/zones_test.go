package zones

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/dnsrecords"
)

func TestNamesAreTheConfigurationsRecordProviders(t *testing.T) {
	if got, want := Names(), slices.Sorted(slices.Values(issuerconfig.RecordProviders)); !slices.Equal(got, want) {
		t.Fatalf("zones build %v, the issuer configuration accepts %v", got, want)
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name, provider string
		creds          map[string][]byte
		config         map[string]string
		want           string
	}{
		{"unknown provider", "digitalocean", nil, nil, `provider "digitalocean" cannot publish records`},
		{"unknown key", "rfc2136", nil, map[string]string{"RFC2136_SERVER": "x"}, "unknown key RFC2136_SERVER"},
		{"rfc2136 without key", "rfc2136", nil, map[string]string{"RFC2136_NAMESERVER": "10.0.0.1"}, "records need a TSIG key"},
		{"route53 half a key", "route53", map[string][]byte{"AWS_ACCESS_KEY_ID": []byte("AKIA")}, nil, "must be set together"},
		{"gcloud without project", "gcloud", nil, nil, "GCE_PROJECT is required"},
		{"gcloud bad key", "gcloud", map[string][]byte{"GCE_SERVICE_ACCOUNT": []byte(`{"project_id":"p","private_key":"sekrit"}`)}, nil, "not a service account key"},
		{"cloudflare no credentials", "cloudflare", nil, nil, "credentials missing"},
		{"cloudflare both", "cloudflare", map[string][]byte{"CF_DNS_API_TOKEN": []byte("t"), "CF_API_KEY": []byte("k")}, nil, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(context.Background(), tt.provider, "example.com", tt.creds, tt.config)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "sekrit") {
				t.Fatalf("error shows a secret: %v", err)
			}
		})
	}
}

// lifecycle drives a zone through what the publisher does with it: create
// an RRset and its owner TXT, change its targets, delete both; after each
// step the zone lists exactly what was applied, and a foreign record stays.
func lifecycle(t *testing.T, z dnsrecords.Zone, foreign dnsrecords.Record) {
	t.Helper()
	ctx := context.Background()
	owner := dnsrecords.Record{Name: dnsrecords.OwnerName("shop.example.com", "A"), Type: "TXT", TTL: 300,
		Targets: []string{dnsrecords.OwnerText("podtls", "service/shop/web")}}
	a := dnsrecords.Record{Name: "shop.example.com", Type: "A", TTL: 300, Targets: []string{"192.0.2.1", "192.0.2.2"}}
	a2 := dnsrecords.Record{Name: "shop.example.com", Type: "A", TTL: 300, Targets: []string{"192.0.2.2", "192.0.2.3"}}
	steps := []struct {
		name string
		ch   dnsrecords.Changes
		want []dnsrecords.Record
	}{
		{"create", dnsrecords.Changes{Create: []dnsrecords.Record{a, owner}}, []dnsrecords.Record{a, owner, foreign}},
		{"update", dnsrecords.Changes{Update: []dnsrecords.Record{a2}}, []dnsrecords.Record{a2, owner, foreign}},
		{"delete", dnsrecords.Changes{Delete: []dnsrecords.Record{a2, owner}}, []dnsrecords.Record{foreign}},
	}
	for _, s := range steps {
		if _, err := z.Records(ctx); err != nil { // the publisher always lists first
			t.Fatalf("%s: list: %v", s.name, err)
		}
		if err := z.Apply(ctx, s.ch); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := z.Records(ctx)
		if err != nil {
			t.Fatalf("%s: list: %v", s.name, err)
		}
		if g, w := sortedStrings(got), sortedStrings(s.want); !slices.Equal(g, w) {
			t.Fatalf("%s: zone holds\n%s\nwant\n%s", s.name, strings.Join(g, "\n"), strings.Join(w, "\n"))
		}
	}
	if err := z.Apply(ctx, dnsrecords.Changes{Create: []dnsrecords.Record{{Name: "shop.example.org", Type: "A", TTL: 300, Targets: []string{"192.0.2.1"}}}}); err == nil ||
		!strings.Contains(err.Error(), "outside the zone") {
		t.Fatalf("record outside the zone: %v", err)
	}
}

func sortedStrings(rs []dnsrecords.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Normalize().String())
	}
	slices.Sort(out)
	return out
}
