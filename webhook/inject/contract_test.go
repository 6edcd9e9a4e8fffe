package inject

import (
	"io"
	"testing"

	"github.com/podtls/podtls/contract"
	sidecarconfig "github.com/podtls/podtls/sidecar/options"
)

// TestArgsParseBySidecar feeds the rendered command lines to the sidecar's own
// flag parser, so the webhook and podtls-sidecar cannot drift apart.
func TestArgsParseBySidecar(t *testing.T) {
	cfg := testConfig()
	for name, ann := range map[string]map[string]string{
		"inbound only":  {contract.Inbound: "8443:8080"},
		"outbound only": {contract.Upstreams: "a.demo.svc:8443@9001"},
		"everything": {
			contract.Inbound:       "8443:8080,9443:9090",
			contract.Upstreams:     "a.demo.svc:8443@9001#spiffe://cluster.local/ns/demo/sa/a,b.other.svc:443@9002",
			contract.ExternalHosts: "shop.example.com,*.shop.example.com",
			contract.Allow:         "spiffe://cluster.local/ns/demo/sa/c,spiffe://cluster.local/ns/ops/*",
			contract.DNSNames:      "a.demo.svc",
			contract.Mode:          "http",
			contract.CertTTL:       "36h",
			contract.AccessLog:     "true",
		},
		"edge": {
			contract.Inbound:        "8443:8080,9443:9090",
			contract.ExternalHosts:  "shop.example.com,*.shop.example.com",
			contract.Mode:           "http",
			contract.Redirect:       "8081",
			contract.TrustedProxies: "10.0.0.0/8,192.168.1.5,2001:db8::/32",
			contract.ProxyProtocol:  "8443,9443",
		},
	} {
		t.Run(name, func(t *testing.T) {
			spec, _, err := Parse(podWith(ann), "demo", cfg)
			if err != nil {
				t.Fatal(err)
			}
			args := Args(spec, cfg)
			if _, err := sidecarconfig.Parse(args, io.Discard); err != nil {
				t.Fatalf("podtls-sidecar rejects %q: %v", args, err)
			}
		})
	}
}
