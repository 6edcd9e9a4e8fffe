package dnsrecords

import (
	"strings"
	"testing"
)

func TestRFC2136FromProvider(t *testing.T) {
	creds := map[string]string{"RFC2136_TSIG_KEY": "records-key\n", "RFC2136_TSIG_SECRET": "c2VjcmV0"}
	tests := []struct {
		name    string
		config  map[string]string
		creds   map[string]string
		zone    string
		server  string
		wantErr string
	}{
		{"port given", map[string]string{"RFC2136_NAMESERVER": "10.0.0.53:5353", "RFC2136_TSIG_ALGORITHM": "hmac-sha512."}, creds, "example.test", "10.0.0.53:5353", ""},
		{"default port", map[string]string{"RFC2136_NAMESERVER": "ns1.example.test"}, creds, "example.test", "ns1.example.test:53", ""},
		{"no server", nil, creds, "example.test", "", "RFC2136_NAMESERVER is required"},
		{"no key", map[string]string{"RFC2136_NAMESERVER": "10.0.0.53"}, nil, "example.test", "", "records need a TSIG key"},
		{"no zone", map[string]string{"RFC2136_NAMESERVER": "10.0.0.53"}, creds, ".", "", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := map[string]string{}
			for _, m := range []map[string]string{tt.config, tt.creds} {
				for k, x := range m {
					v[k] = x
				}
			}
			z, err := RFC2136FromProvider(tt.zone, v)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || z.Server != tt.server || z.KeyName != "records-key" || z.Secret != "c2VjcmV0" {
				t.Fatalf("%+v, %v", z, err)
			}
		})
	}
}
