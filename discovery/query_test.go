package discovery

import (
	"net/url"
	"testing"
	"time"

	"github.com/podtls/podtls/discovery/discoveryapi"
)

func TestParseQuery(t *testing.T) {
	for _, tt := range []struct {
		raw     string
		want    query
		wantErr bool
	}{
		{raw: "host=preference.demo.svc&port=8443", want: query{host: "preference.demo.svc", port: 8443}},
		{raw: "host=p&port=1&version=abc&wait=30s", want: query{host: "p", port: 1, version: "abc", wait: 30 * time.Second}},
		{raw: "host=p&port=65535&wait=10m", want: query{host: "p", port: 65535, wait: discoveryapi.MaxWait}},
		{raw: "host=p&port=80&wait=0s", want: query{host: "p", port: 80}},
		{raw: "host=p&port=80&future=1", want: query{host: "p", port: 80}},
		{raw: "port=80", wantErr: true},
		{raw: "host=&port=80", wantErr: true},
		{raw: "host=p", wantErr: true},
		{raw: "host=p&port=0", wantErr: true},
		{raw: "host=p&port=65536", wantErr: true},
		{raw: "host=p&port=http", wantErr: true},
		{raw: "host=p&port=80&port=81", wantErr: true},
		{raw: "host=p&host=q&port=80", wantErr: true},
		{raw: "host=p&port=80&wait=30", wantErr: true}, // a duration needs its unit
		{raw: "host=p&port=80&wait=-1s", wantErr: true},
		{raw: "host=p&port=80&version=" + string(make([]byte, 65)), wantErr: true},
	} {
		t.Run(tt.raw, func(t *testing.T) {
			v, err := url.ParseQuery(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseQuery(v)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseQuery(%q) = %+v, %v; want %+v, error %v", tt.raw, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzParseQuery: whatever the query string, an accepted query has a host,
// a valid port and a wait within [0, MaxWait].
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"host=preference.demo.svc&port=8443&version=0123456789abcdef&wait=30s",
		"host=p&port=65536", "wait=-1h&host=a&port=1", "host=%zz", "port=+80&host=a", "host=a&port=80&wait=1e9h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseQuery(v)
		if err != nil {
			return
		}
		if q.host == "" || q.port < 1 || q.port > 65535 || q.wait < 0 || q.wait > discoveryapi.MaxWait {
			t.Fatalf("parseQuery(%q) accepted %+v", raw, q)
		}
	})
}
