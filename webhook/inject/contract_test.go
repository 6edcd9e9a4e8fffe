package inject

import (
	"io"
	"testing"

	sidecarconfig "github.com/podtls/podtls/sidecar/options"
	"github.com/podtls/podtls/webhook/annotations"
)

// TestArgsParseBySidecar feeds the rendered command lines to the sidecar's own
// flag parser, so the webhook and podtls-sidecar cannot drift apart.
func TestArgsParseBySidecar(t *testing.T) {
	cfg := testConfig()
	for name, ann := range map[string]map[string]string{
		"inbound only":  {annotations.Inbound: "8443:8080"},
		"outbound only": {annotations.Upstreams: "a.demo.svc:8443@9001"},
		"everything": {
			annotations.Inbound:       "8443:8080,9443:9090",
			annotations.Upstreams:     "a.demo.svc:8443@9001#spiffe://cluster.local/ns/demo/sa/a,b.other.svc:443@9002",
			annotations.ExternalHosts: "shop.example.com,*.shop.example.com",
			annotations.Allow:         "spiffe://cluster.local/ns/demo/sa/c,spiffe://cluster.local/ns/ops/*",
			annotations.DNSNames:      "a.demo.svc",
			annotations.Mode:          "http",
			annotations.CertTTL:       "36h",
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
