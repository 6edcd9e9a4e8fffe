package zones

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudflare/cloudflare-go"

	"github.com/podtls/podtls/dnsrecords"
)

// fakeCloudflare serves the v4 API calls the zone makes, one record per
// content; it returns TXT content unquoted, as Cloudflare may.
type fakeCloudflare struct {
	mu    sync.Mutex
	recs  []cloudflare.DNSRecord
	next  int
	calls map[string]int
}

func (f *fakeCloudflare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, `{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}`, http.StatusForbidden)
		return
	}
	f.calls[r.Method]++
	reply := func(result any) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "result": result,
			"result_info": map[string]int{"page": 1, "per_page": 100, "count": 1, "total_count": 1, "total_pages": 1}})
	}
	const records = "/zones/z1/dns_records"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/zones" && r.URL.Query().Get("name") == "example.com":
		reply([]map[string]string{{"id": "z1", "name": "example.com"}})
	case r.Method == http.MethodGet && r.URL.Path == records:
		reply(f.recs)
	case r.Method == http.MethodPost && r.URL.Path == records:
		var rec cloudflare.DNSRecord
		_ = json.NewDecoder(r.Body).Decode(&rec)
		f.next++
		rec.ID = fmt.Sprint("r", f.next)
		rec.Content = strings.Trim(rec.Content, `"`)
		f.recs = append(f.recs, rec)
		reply(rec)
	case strings.HasPrefix(r.URL.Path, records+"/"):
		id := strings.TrimPrefix(r.URL.Path, records+"/")
		for i, rec := range f.recs {
			if rec.ID != id {
				continue
			}
			if r.Method == http.MethodDelete {
				f.recs = append(f.recs[:i], f.recs[i+1:]...)
				reply(map[string]string{"id": id})
				return
			}
			var upd cloudflare.DNSRecord
			_ = json.NewDecoder(r.Body).Decode(&upd)
			upd.ID, upd.Content = id, strings.Trim(upd.Content, `"`)
			f.recs[i] = upd
			reply(upd)
			return
		}
		http.Error(w, `{"success":false,"errors":[{"code":81044,"message":"Record does not exist."}]}`, http.StatusNotFound)
	default:
		http.Error(w, `{"success":false,"errors":[{"code":7000,"message":"No route"}]}`, http.StatusNotFound)
	}
}

func TestCloudflare(t *testing.T) {
	f := &fakeCloudflare{calls: map[string]int{}, recs: []cloudflare.DNSRecord{
		{ID: "own1", Type: "A", Name: "static.example.com", Content: "198.51.100.7", TTL: 120},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	z, err := New(context.Background(), "cloudflare", "example.com", map[string][]byte{"CF_DNS_API_TOKEN": []byte("tok")},
		map[string]string{"CLOUDFLARE_BASE_URL": srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	lifecycle(t, z, dnsrecords.Record{Name: "static.example.com", Type: "A", TTL: 120, Targets: []string{"198.51.100.7"}})
	// create: 2 A + 1 TXT; update 192.0.2.{1,2} -> {2,3}: one record reused; delete: 2 + 1.
	if f.calls[http.MethodPost] != 3 || f.calls[http.MethodPatch] != 1 || f.calls[http.MethodDelete] != 3 {
		t.Fatalf("calls %v", f.calls)
	}
}
