package zones

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	clouddns "google.golang.org/api/dns/v1"
	"google.golang.org/api/option"

	"github.com/podtls/podtls/dnsrecords"
)

// fakeCloudDNS serves the Cloud DNS v1 REST calls the zone makes; a change
// whose deletions do not match the current sets exactly fails whole, as
// Cloud DNS's does.
type fakeCloudDNS struct {
	mu   sync.Mutex
	sets []*clouddns.ResourceRecordSet
}

func (f *fakeCloudDNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/dns/v1/projects/p1/managedZones" && r.URL.Query().Get("dnsName") == "example.com.":
		reply(clouddns.ManagedZonesListResponse{ManagedZones: []*clouddns.ManagedZone{{Name: "internal", Visibility: "private"}, {Name: "public-zone", Visibility: "public"}}})
	case r.Method == http.MethodGet && r.URL.Path == "/dns/v1/projects/p1/managedZones/public-zone/rrsets":
		reply(clouddns.ResourceRecordSetsListResponse{Rrsets: f.sets})
	case r.Method == http.MethodPost && r.URL.Path == "/dns/v1/projects/p1/managedZones/public-zone/changes":
		var c clouddns.Change
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sets := slices.Clone(f.sets)
		for _, d := range c.Deletions {
			i := slices.IndexFunc(sets, func(s *clouddns.ResourceRecordSet) bool {
				return s.Name == d.Name && s.Type == d.Type && s.Ttl == d.Ttl && slices.Equal(s.Rrdatas, d.Rrdatas)
			})
			if i < 0 {
				http.Error(w, `{"error":{"code":412,"message":"conditionNotMet"}}`, http.StatusPreconditionFailed)
				return
			}
			sets = slices.Delete(sets, i, i+1)
		}
		f.sets = append(sets, c.Additions...)
		reply(c)
	default:
		http.Error(w, `{"error":{"code":404,"message":"not found"}}`, http.StatusNotFound)
	}
}

func TestGoogleCloudDNS(t *testing.T) {
	f := &fakeCloudDNS{sets: []*clouddns.ResourceRecordSet{
		{Name: "example.com.", Type: "SOA", Ttl: 21600, Rrdatas: []string{"ns. admin. 1 2 3 4 5"}},
		{Name: "www.example.com.", Type: "CNAME", Ttl: 300, Rrdatas: []string{"web.example.net."}},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	z, err := newGoogleZone(context.Background(), "example.com", "p1", "", false, option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	lifecycle(t, z, dnsrecords.Record{Name: "www.example.com", Type: "CNAME", TTL: 300, Targets: []string{"web.example.net"}})
	if z.managed != "public-zone" {
		t.Fatalf("managed zone %q, want the public one", z.managed)
	}
}
