package zones

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/dns/armdns"

	"github.com/podtls/podtls/dnsrecords"
)

// azureZone is a public Azure DNS zone. Its API changes one record set per
// call: a pass is several calls (creates and updates before deletes), not
// atomic.
type azureZone struct {
	api   *armdns.RecordSetsClient
	group string
	name  string // Azure's zone name
	zone  string // DNS name without trailing dot

	mu    sync.Mutex
	alias map[dnsrecords.Key]bool // sets pointing at an Azure resource: never touched
}

func newAzure(_ context.Context, zone string, v map[string]string) (dnsrecords.Zone, error) {
	if v["AZURE_PRIVATE_ZONE"] == "true" {
		return nil, errors.New("records are published in public zones only (AZURE_PRIVATE_ZONE is true)")
	}
	sub, group := v["AZURE_SUBSCRIPTION_ID"], v["AZURE_RESOURCE_GROUP"]
	if sub == "" || group == "" {
		return nil, errors.New("records need AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP (the zone's, not discovered)")
	}
	env := cloud.AzurePublic
	switch v["AZURE_ENVIRONMENT"] {
	case "china":
		env = cloud.AzureChina
	case "usgovernment":
		env = cloud.AzureGovernment
	}
	opts := azcore.ClientOptions{Cloud: env}
	var cred azcore.TokenCredential
	var err error
	method := v["AZURE_AUTH_METHOD"]
	if v["AZURE_CLIENT_SECRET"] != "" && method == "" {
		method = "env" // a given secret wins over ambient identities, as for DNS-01
	}
	switch method {
	case "env":
		cred, err = azidentity.NewClientSecretCredential(v["AZURE_TENANT_ID"], v["AZURE_CLIENT_ID"], v["AZURE_CLIENT_SECRET"], &azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	case "wli":
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: opts, ClientID: v["AZURE_CLIENT_ID"], TenantID: v["AZURE_TENANT_ID"]})
	case "msi":
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if id := v["AZURE_CLIENT_ID"]; id != "" {
			o.ID = azidentity.ClientID(id)
		}
		cred, err = azidentity.NewManagedIdentityCredential(o)
	default:
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts, TenantID: v["AZURE_TENANT_ID"]})
	}
	if err != nil {
		return nil, errors.New("Azure credentials (" + orDefault(method, "default chain") + "): not usable") // messages may quote them
	}
	name := v["AZURE_ZONE_NAME"]
	if name == "" {
		name = zone
	}
	return newAzureZone(sub, group, name, zone, cred, &arm.ClientOptions{ClientOptions: opts})
}

func newAzureZone(sub, group, name, zone string, cred azcore.TokenCredential, opts *arm.ClientOptions) (*azureZone, error) {
	api, err := armdns.NewRecordSetsClient(sub, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("Azure DNS client: %w", err)
	}
	return &azureZone{api: api, group: group, name: name, zone: zone}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// relative is the record set name Azure uses ("@" for the apex).
func (z *azureZone) relative(name string) string {
	if name == z.zone {
		return "@"
	}
	return strings.TrimSuffix(name, "."+z.zone)
}

// Records lists the zone's A, AAAA, CNAME and TXT record sets.
func (z *azureZone) Records(ctx context.Context) ([]dnsrecords.Record, error) {
	var out []dnsrecords.Record
	alias := map[dnsrecords.Key]bool{}
	pager := z.api.NewListByDNSZonePager(z.group, z.name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list records of %s (resource group %s): %w", z.name, z.group, err)
		}
		for _, rs := range page.Value {
			r, ok := fromAzure(rs, z.zone)
			if !ok {
				continue
			}
			if p := rs.Properties; p != nil && p.TargetResource != nil && p.TargetResource.ID != nil {
				r.Targets = append(r.Targets, "alias:"+*p.TargetResource.ID)
				alias[r.Key()] = true
			}
			out = append(out, r.Normalize())
		}
	}
	z.mu.Lock()
	z.alias = alias
	z.mu.Unlock()
	return out, nil
}

func fromAzure(rs *armdns.RecordSet, zone string) (dnsrecords.Record, bool) {
	if rs == nil || rs.Type == nil || rs.Name == nil || rs.Properties == nil {
		return dnsrecords.Record{}, false
	}
	t := (*rs.Type)[strings.LastIndex(*rs.Type, "/")+1:]
	if !published(t) {
		return dnsrecords.Record{}, false
	}
	name := zone
	if *rs.Name != "@" {
		name = strings.ToLower(*rs.Name) + "." + zone
	}
	p := rs.Properties
	r := dnsrecords.Record{Name: name, Type: t, TTL: deref(p.TTL)}
	switch t {
	case dnsrecords.TypeA:
		for _, a := range p.ARecords {
			r.Targets = append(r.Targets, deref(a.IPv4Address))
		}
	case dnsrecords.TypeAAAA:
		for _, a := range p.AaaaRecords {
			r.Targets = append(r.Targets, deref(a.IPv6Address))
		}
	case dnsrecords.TypeCNAME:
		if p.CnameRecord != nil {
			r.Targets = append(r.Targets, deref(p.CnameRecord.Cname))
		}
	case dnsrecords.TypeTXT:
		for _, txt := range p.TxtRecords {
			var parts []string
			for _, s := range txt.Value {
				parts = append(parts, deref(s))
			}
			r.Targets = append(r.Targets, strconv.Quote(strings.Join(parts, "")))
		}
	}
	return r, true
}

// Apply writes each set that changes and deletes those that go.
func (z *azureZone) Apply(ctx context.Context, ch dnsrecords.Changes) error {
	z.mu.Lock()
	alias := z.alias
	z.mu.Unlock()
	for _, r := range append(append([]dnsrecords.Record(nil), ch.Create...), ch.Update...) {
		if !inZone(r.Name, z.zone) {
			return fmt.Errorf("record %s is outside the zone %s", r.Name, z.zone)
		}
		if alias[r.Key()] {
			return fmt.Errorf("record %s %s is an Azure alias: not changed", r.Name, r.Type)
		}
		rs, err := toAzure(r)
		if err != nil {
			return err
		}
		if _, err := z.api.CreateOrUpdate(ctx, z.group, z.name, z.relative(r.Name), armdns.RecordType(r.Type), rs, nil); err != nil {
			return fmt.Errorf("write %s %s: %w", r.Name, r.Type, err)
		}
	}
	for _, r := range ch.Delete {
		if _, err := z.api.Delete(ctx, z.group, z.name, z.relative(r.Name), armdns.RecordType(r.Type), nil); err != nil {
			return fmt.Errorf("delete %s %s: %w", r.Name, r.Type, err)
		}
	}
	return nil
}

func toAzure(r dnsrecords.Record) (armdns.RecordSet, error) {
	p := &armdns.RecordSetProperties{TTL: to.Ptr(r.TTL)}
	for _, t := range r.Targets {
		switch r.Type {
		case dnsrecords.TypeA:
			p.ARecords = append(p.ARecords, &armdns.ARecord{IPv4Address: to.Ptr(t)})
		case dnsrecords.TypeAAAA:
			p.AaaaRecords = append(p.AaaaRecords, &armdns.AaaaRecord{IPv6Address: to.Ptr(t)})
		case dnsrecords.TypeCNAME:
			p.CnameRecord = &armdns.CnameRecord{Cname: to.Ptr(t)}
		case dnsrecords.TypeTXT:
			s, err := strconv.Unquote(t)
			if err != nil {
				s = t
			}
			p.TxtRecords = append(p.TxtRecords, &armdns.TxtRecord{Value: []*string{to.Ptr(s)}})
		default:
			return armdns.RecordSet{}, fmt.Errorf("record type %s is not published", r.Type)
		}
	}
	return armdns.RecordSet{Properties: p}, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
