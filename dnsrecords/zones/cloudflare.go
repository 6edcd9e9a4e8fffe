package zones

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cloudflare/cloudflare-go"

	"github.com/podtls/podtls/dnsrecords"
)

// cloudflareMinTTL is the shortest TTL Cloudflare takes (1 means "auto").
const cloudflareMinTTL = 60

// cloudflareZone is a zone on Cloudflare. Its API holds single records, not
// RRsets: an RRset change becomes per-record calls, applied in order
// (creates and updates before deletes, so a name never goes empty on the
// way), not atomically.
type cloudflareZone struct {
	api  *cloudflare.API
	zone string // name without trailing dot
	id   string // zone ID; found on first use

	mu   sync.Mutex
	last map[dnsrecords.Key][]cloudflare.DNSRecord // as last listed: IDs for updates and deletes
}

func newCloudflare(_ context.Context, zone string, v map[string]string) (dnsrecords.Zone, error) {
	var opts []cloudflare.Option
	if u := v["CLOUDFLARE_BASE_URL"]; u != "" {
		opts = append(opts, cloudflare.BaseURL(u))
	}
	var api *cloudflare.API
	var err error
	switch token, email, key := v["CF_DNS_API_TOKEN"], v["CF_API_EMAIL"], v["CF_API_KEY"]; {
	case token != "" && (email != "" || key != ""):
		return nil, errors.New("set either CF_DNS_API_TOKEN or CF_API_EMAIL with CF_API_KEY, not both")
	case token != "":
		api, err = cloudflare.NewWithAPIToken(token, opts...)
	case email != "" && key != "":
		api, err = cloudflare.New(key, email, opts...)
	default:
		return nil, errors.New("credentials missing: set CF_DNS_API_TOKEN (or CF_API_EMAIL and CF_API_KEY) in the credentials Secret")
	}
	if err != nil {
		return nil, errors.New("Cloudflare client: invalid credentials") // the library's message may quote them
	}
	return &cloudflareZone{api: api, zone: zone}, nil
}

func (z *cloudflareZone) zoneID() (string, error) {
	if z.id != "" {
		return z.id, nil
	}
	id, err := z.api.ZoneIDByName(z.zone)
	if err != nil {
		return "", fmt.Errorf("find zone %s: %w", z.zone, err)
	}
	z.id = id
	return id, nil
}

// Records lists the zone's A, AAAA, CNAME and TXT records as RRsets.
func (z *cloudflareZone) Records(ctx context.Context) ([]dnsrecords.Record, error) {
	id, err := z.zoneID()
	if err != nil {
		return nil, err
	}
	recs, _, err := z.api.ListDNSRecords(ctx, cloudflare.ZoneIdentifier(id), cloudflare.ListDNSRecordsParams{})
	if err != nil {
		return nil, fmt.Errorf("list records of %s: %w", z.zone, err)
	}
	last := map[dnsrecords.Key][]cloudflare.DNSRecord{}
	sets := map[dnsrecords.Key]*dnsrecords.Record{}
	var order []dnsrecords.Key
	for _, rec := range recs {
		if !published(rec.Type) {
			continue
		}
		r := dnsrecords.Record{Name: rec.Name, Type: rec.Type, TTL: int64(rec.TTL)}.Normalize()
		k := r.Key()
		if sets[k] == nil {
			sets[k] = &r
			order = append(order, k)
		}
		content := rec.Content
		if rec.Type == dnsrecords.TypeTXT && !strings.HasPrefix(content, `"`) {
			content = strconv.Quote(content) // Cloudflare may return TXT content unquoted
		}
		if rec.Proxied != nil && *rec.Proxied {
			content = "proxied:" + content // taken: podtls never owns a proxied record
		}
		sets[k].Targets = append(sets[k].Targets, content)
		last[k] = append(last[k], rec)
	}
	out := make([]dnsrecords.Record, 0, len(order))
	for _, k := range order {
		out = append(out, sets[k].Normalize())
	}
	z.mu.Lock()
	z.last = last
	z.mu.Unlock()
	return out, nil
}

// Apply creates, updates and deletes the records of each RRset.
func (z *cloudflareZone) Apply(ctx context.Context, ch dnsrecords.Changes) error {
	if ch.Empty() {
		return nil
	}
	id, err := z.zoneID()
	if err != nil {
		return err
	}
	rc := cloudflare.ZoneIdentifier(id)
	z.mu.Lock()
	last := z.last
	z.mu.Unlock()
	for _, r := range append(append([]dnsrecords.Record(nil), ch.Create...), ch.Update...) {
		if !inZone(r.Name, z.zone) {
			return fmt.Errorf("record %s is outside the zone %s", r.Name, z.zone)
		}
		if err := z.put(ctx, rc, r, last[r.Key()]); err != nil {
			return err
		}
	}
	for _, r := range ch.Delete {
		for _, rec := range last[r.Key()] {
			if err := z.api.DeleteDNSRecord(ctx, rc, rec.ID); err != nil {
				return fmt.Errorf("delete %s %s: %w", r.Name, r.Type, err)
			}
		}
	}
	return nil
}

// put makes the records of one RRset hold r: records whose content stays
// are kept (their TTL updated), others are reused for new content or
// deleted, the rest created.
func (z *cloudflareZone) put(ctx context.Context, rc *cloudflare.ResourceContainer, r dnsrecords.Record, cur []cloudflare.DNSRecord) error {
	ttl := max(int(r.TTL), cloudflareMinTTL)
	proxied := false
	want := slices.Clone(r.Targets)
	var spare []cloudflare.DNSRecord
	for _, rec := range cur {
		if i := slices.IndexFunc(want, func(t string) bool { return sameContent(r.Type, t, rec.Content) }); i >= 0 {
			want = slices.Delete(want, i, i+1)
			if rec.TTL != ttl {
				if _, err := z.api.UpdateDNSRecord(ctx, rc, cloudflare.UpdateDNSRecordParams{ID: rec.ID, Type: r.Type, Name: r.Name, Content: rec.Content, TTL: ttl, Proxied: &proxied}); err != nil {
					return fmt.Errorf("update %s %s: %w", r.Name, r.Type, err)
				}
			}
			continue
		}
		spare = append(spare, rec)
	}
	for _, t := range want {
		if len(spare) > 0 {
			rec := spare[0]
			spare = spare[1:]
			if _, err := z.api.UpdateDNSRecord(ctx, rc, cloudflare.UpdateDNSRecordParams{ID: rec.ID, Type: r.Type, Name: r.Name, Content: t, TTL: ttl, Proxied: &proxied}); err != nil {
				return fmt.Errorf("update %s %s: %w", r.Name, r.Type, err)
			}
			continue
		}
		if _, err := z.api.CreateDNSRecord(ctx, rc, cloudflare.CreateDNSRecordParams{Type: r.Type, Name: r.Name, Content: t, TTL: ttl, Proxied: &proxied}); err != nil {
			return fmt.Errorf("create %s %s: %w", r.Name, r.Type, err)
		}
	}
	for _, rec := range spare {
		if err := z.api.DeleteDNSRecord(ctx, rc, rec.ID); err != nil {
			return fmt.Errorf("delete %s %s: %w", r.Name, r.Type, err)
		}
	}
	return nil
}

// sameContent compares a wanted target with a record's content the way
// Cloudflare stores it (TXT may come back unquoted, names without dots).
func sameContent(typ, want, got string) bool {
	if typ == dnsrecords.TypeTXT && !strings.HasPrefix(got, `"`) {
		got = strconv.Quote(got)
	}
	if typ == dnsrecords.TypeCNAME {
		return strings.EqualFold(strings.TrimSuffix(want, "."), strings.TrimSuffix(got, "."))
	}
	return want == got
}
