package zones

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/oauth2/google"
	clouddns "google.golang.org/api/dns/v1"
	"google.golang.org/api/option"

	"github.com/podtls/podtls/dnsrecords"
)

// clouddnsScope is read-write access to Cloud DNS only.
const clouddnsScope = "https://www.googleapis.com/auth/ndev.clouddns.readwrite"

// googleZone is a managed zone of Google Cloud DNS.
type googleZone struct {
	svc     *clouddns.Service
	project string
	zone    string // DNS name without trailing dot
	managed string // managed zone name; found on first use when empty
	private bool   // private zones allowed

	mu   sync.Mutex
	last map[dnsrecords.Key]*clouddns.ResourceRecordSet // as last listed: what a change deletes
}

func newGoogle(ctx context.Context, zone string, v map[string]string) (dnsrecords.Zone, error) {
	project := v["GCE_PROJECT"]
	var client *http.Client
	// Token refreshes outlive ctx (the zone is kept across passes).
	bg := context.WithoutCancel(ctx)
	if key := v["GCE_SERVICE_ACCOUNT"]; key != "" {
		if project == "" {
			var sa struct {
				ProjectID string `json:"project_id"`
			}
			if json.Unmarshal([]byte(key), &sa) != nil || sa.ProjectID == "" {
				return nil, errors.New("GCE_SERVICE_ACCOUNT has no project_id and GCE_PROJECT is not set")
			}
			project = sa.ProjectID
		}
		jwt, err := google.JWTConfigFromJSON([]byte(key), clouddnsScope)
		if err != nil {
			// The parser's message may quote the key: keep it out.
			return nil, errors.New("GCE_SERVICE_ACCOUNT is not a service account key in JSON")
		}
		client = jwt.Client(bg)
	} else {
		if project == "" {
			return nil, errors.New("GCE_PROJECT is required when GCE_SERVICE_ACCOUNT is not set")
		}
		c, err := google.DefaultClient(bg, clouddnsScope)
		if err != nil {
			return nil, fmt.Errorf("ambient Google credentials: %w", err)
		}
		client = c
	}
	return newGoogleZone(bg, zone, project, v["GCE_ZONE_ID"], v["GCE_ALLOW_PRIVATE_ZONE"] == "true", option.WithHTTPClient(client))
}

func newGoogleZone(ctx context.Context, zone, project, managed string, private bool, opts ...option.ClientOption) (*googleZone, error) {
	svc, err := clouddns.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("Cloud DNS client: %w", err)
	}
	return &googleZone{svc: svc, project: project, zone: zone, managed: managed, private: private}, nil
}

// managedZone finds the managed zone serving the zone's name, once.
func (z *googleZone) managedZone(ctx context.Context) (string, error) {
	if z.managed != "" {
		return z.managed, nil
	}
	out, err := z.svc.ManagedZones.List(z.project).DnsName(fqdn(z.zone)).Context(ctx).Do()
	if err != nil {
		return "", fmt.Errorf("find managed zone %s in project %s: %w", z.zone, z.project, err)
	}
	for _, mz := range out.ManagedZones {
		if mz.Visibility == "private" && !z.private {
			continue
		}
		z.managed = mz.Name
		return z.managed, nil
	}
	return "", fmt.Errorf("no managed zone for %s in project %s (set GCE_ZONE_ID to choose one; private zones need GCE_ALLOW_PRIVATE_ZONE)", z.zone, z.project)
}

// Records lists the zone's A, AAAA, CNAME and TXT RRsets, and keeps them:
// Cloud DNS deletes an RRset only by its exact current content.
func (z *googleZone) Records(ctx context.Context) ([]dnsrecords.Record, error) {
	mz, err := z.managedZone(ctx)
	if err != nil {
		return nil, err
	}
	last := map[dnsrecords.Key]*clouddns.ResourceRecordSet{}
	var out []dnsrecords.Record
	err = z.svc.ResourceRecordSets.List(z.project, mz).Pages(ctx, func(page *clouddns.ResourceRecordSetsListResponse) error {
		for _, rs := range page.Rrsets {
			if !published(rs.Type) {
				continue
			}
			r := dnsrecords.Record{Name: rs.Name, Type: rs.Type, TTL: rs.Ttl, Targets: append([]string(nil), rs.Rrdatas...)}
			if rs.RoutingPolicy != nil {
				r.Targets = append(r.Targets, "routing-policy") // taken: podtls never owns it
			}
			r = r.Normalize()
			last[r.Key()] = rs
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list records of %s (%s): %w", z.zone, mz, err)
	}
	z.mu.Lock()
	z.last = last
	z.mu.Unlock()
	return out, nil
}

// Apply sends the changes as one Cloud DNS change, applied whole.
func (z *googleZone) Apply(ctx context.Context, ch dnsrecords.Changes) error {
	if ch.Empty() {
		return nil
	}
	mz, err := z.managedZone(ctx)
	if err != nil {
		return err
	}
	z.mu.Lock()
	last := z.last
	z.mu.Unlock()
	change := &clouddns.Change{}
	for _, r := range append(append([]dnsrecords.Record(nil), ch.Delete...), ch.Update...) {
		cur, ok := last[r.Key()]
		if !ok {
			return fmt.Errorf("record %s %s: not in the zone as last listed; list again before changing it", r.Name, r.Type)
		}
		change.Deletions = append(change.Deletions, cur)
	}
	for _, r := range append(append([]dnsrecords.Record(nil), ch.Update...), ch.Create...) {
		if !inZone(r.Name, z.zone) {
			return fmt.Errorf("record %s is outside the zone %s", r.Name, z.zone)
		}
		change.Additions = append(change.Additions, toGoogle(r))
	}
	if _, err := z.svc.Changes.Create(z.project, mz, change).Context(ctx).Do(); err != nil {
		return fmt.Errorf("change records of %s (%s): %w", z.zone, mz, err)
	}
	return nil
}

func toGoogle(r dnsrecords.Record) *clouddns.ResourceRecordSet {
	rs := &clouddns.ResourceRecordSet{Name: fqdn(r.Name), Type: r.Type, Ttl: r.TTL}
	for _, t := range r.Targets {
		if r.Type == dnsrecords.TypeCNAME {
			t = fqdn(t)
		}
		rs.Rrdatas = append(rs.Rrdatas, t)
	}
	return rs
}
