package zones

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/dns/armdns"

	"github.com/podtls/podtls/dnsrecords"
)

// fakeAzureDNS serves the Azure Resource Manager calls of a DNS zone's
// record sets, keyed by "TYPE/relative-name".
type fakeAzureDNS struct {
	mu   sync.Mutex
	sets map[string]*armdns.RecordSet
}

func (f *fakeAzureDNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer fake-token" {
		http.Error(w, `{"error":{"code":"AuthenticationFailed"}}`, http.StatusUnauthorized)
		return
	}
	const zone = "/subscriptions/sub1/resourceGroups/dns-rg/providers/Microsoft.Network/dnsZones/example.com/"
	rest, ok := strings.CutPrefix(r.URL.Path, zone)
	if !ok {
		http.Error(w, `{"error":{"code":"ResourceNotFound"}}`, http.StatusNotFound)
		return
	}
	switch {
	case r.Method == http.MethodGet && rest == "recordsets":
		var out armdns.RecordSetListResult
		for _, rs := range f.sets {
			out.Value = append(out.Value, rs)
		}
		_ = json.NewEncoder(w).Encode(out)
	case r.Method == http.MethodPut:
		var rs armdns.RecordSet
		if err := json.NewDecoder(r.Body).Decode(&rs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		typ, name, _ := strings.Cut(rest, "/")
		rs.Name, rs.Type = &name, ptr("Microsoft.Network/dnszones/"+typ)
		f.sets[rest] = &rs
		_ = json.NewEncoder(w).Encode(rs)
	case r.Method == http.MethodDelete:
		delete(f.sets, rest)
		w.WriteHeader(http.StatusOK)
	default:
		http.Error(w, `{"error":{"code":"BadRequest"}}`, http.StatusBadRequest)
	}
}

func ptr[T any](v T) *T { return &v }

type fakeToken struct{}

func (fakeToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "fake-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestAzureDNS(t *testing.T) {
	f := &fakeAzureDNS{sets: map[string]*armdns.RecordSet{
		"CNAME/www": {Name: ptr("www"), Type: ptr("Microsoft.Network/dnszones/CNAME"),
			Properties: &armdns.RecordSetProperties{TTL: ptr(int64(300)), CnameRecord: &armdns.CnameRecord{Cname: ptr("web.example.net")}}},
		"SOA/@": {Name: ptr("@"), Type: ptr("Microsoft.Network/dnszones/SOA"), Properties: &armdns.RecordSetProperties{TTL: ptr(int64(3600))}},
	}}
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	opts := &arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: srv.URL, Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
			cloud.ResourceManager: {Audience: srv.URL, Endpoint: srv.URL}}},
		Transport: srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1},
	}}
	z, err := newAzureZone("sub1", "dns-rg", "example.com", "example.com", fakeToken{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	lifecycle(t, z, dnsrecords.Record{Name: "www.example.com", Type: "CNAME", TTL: 300, Targets: []string{"web.example.net"}})
	if _, ok := f.sets["TXT/a-shop"]; ok {
		t.Fatal("ownership TXT left behind")
	}
}

func TestAzureNeedsTheZonesGroup(t *testing.T) {
	_, err := New(context.Background(), "azuredns", "example.com", map[string][]byte{"AZURE_CLIENT_SECRET": []byte("sekrit")},
		map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"})
	if err == nil || !strings.Contains(err.Error(), "AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP") {
		t.Fatalf("err %v", err)
	}
}
