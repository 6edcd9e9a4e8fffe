package contract

import (
	"strings"
	"testing"
	"time"
)

func TestParseUpstream(t *testing.T) {
	cases := []struct {
		in      string
		want    Upstream
		wantErr string
	}{
		{"preference.demo.svc:8443@9001", Upstream{Host: "preference.demo.svc", Port: 8443, LocalPort: 9001}, ""},
		{"preference.demo.svc.cluster.local:8443@9001", Upstream{Host: "preference.demo.svc.cluster.local", Port: 8443, LocalPort: 9001}, ""},
		{"web-0.web.db.svc.cluster.local:5432@5432", Upstream{Host: "web-0.web.db.svc.cluster.local", Port: 5432, LocalPort: 5432}, ""},
		{"10-1-2-3.demo.pod.cluster.local:8443@9001", Upstream{Host: "10-1-2-3.demo.pod.cluster.local", Port: 8443, LocalPort: 9001}, ""},
		{"vm1.corp.example:8443@9001#spiffe://cluster.local/ns/vms/sa/vm1",
			Upstream{Host: "vm1.corp.example", Port: 8443, LocalPort: 9001, ID: "spiffe://cluster.local/ns/vms/sa/vm1"}, ""},
		{"tls://api.stripe.com:443@9002", Upstream{Host: "api.stripe.com", Port: 443, LocalPort: 9002, Public: true}, ""},
		{"TLS://API.Stripe.com.:443@9002", Upstream{Host: "api.stripe.com", Port: 443, LocalPort: 9002, Public: true}, ""},
		{"tls://10.0.0.7:443@9002", Upstream{Host: "10.0.0.7", Port: 443, LocalPort: 9002, Public: true}, ""},
		// The footgun: a public name without tls:// would fail every handshake with unknown_ca.
		{"api.stripe.com:443@9002", Upstream{}, `write "tls://api.stripe.com:443@9002"`},
		{"preference.demo:8443@9001", Upstream{}, "not a cluster name"},
		{"preference.demo.svc.other.domain:8443@9001", Upstream{}, "not a cluster name"},
		{"10.0.0.7:8443@9001", Upstream{}, "not a cluster name"},
		{"tls://api.stripe.com:443@9002#spiffe://cluster.local/ns/a/sa/b", Upstream{}, "no SPIFFE ID"},
		{"mtls://a.demo.svc:1@2", Upstream{}, `scheme "mtls"`},
		{"tls://:443@9002", Upstream{}, "host"},
		{"a.demo.svc@9001", Upstream{}, "missing :PORT"},
		{"a.demo.svc:8443@9001/http", Upstream{Host: "a.demo.svc", Port: 8443, LocalPort: 9001, Protocol: UpstreamHTTP}, ""},
		{"a.demo.svc:8443@9001/TCP#spiffe://cluster.local/ns/demo/sa/a", Upstream{Host: "a.demo.svc", Port: 8443, LocalPort: 9001, Protocol: UpstreamTCP, ID: "spiffe://cluster.local/ns/demo/sa/a"}, ""},
		{"tls://api.example.com:443@9002/http", Upstream{Host: "api.example.com", Port: 443, LocalPort: 9002, Public: true, Protocol: UpstreamHTTP}, ""},
		{"a.demo.svc:8443@9001/http?timeout=5s&retries=2#spiffe://cluster.local/ns/demo/sa/a",
			Upstream{Host: "a.demo.svc", Port: 8443, LocalPort: 9001, Protocol: UpstreamHTTP, Timeout: 5 * time.Second, Retries: 2, ID: "spiffe://cluster.local/ns/demo/sa/a"}, ""},
		{"a.demo.svc:8443@9001?retries=0&timeout=1500ms", Upstream{Host: "a.demo.svc", Port: 8443, LocalPort: 9001, Timeout: 1500 * time.Millisecond}, ""},
		{"a.demo.svc:8443@9001/http?timeout=0s", Upstream{}, "between 1ms and 1h0m0s"},
		{"a.demo.svc:8443@9001/http?timeout=2h", Upstream{}, "between 1ms and 1h0m0s"},
		{"a.demo.svc:8443@9001/http?retries=6", Upstream{}, "between 0 and 5"},
		{"a.demo.svc:8443@9001/http?retries=-1", Upstream{}, "between 0 and 5"},
		{"a.demo.svc:8443@9001/http?timeout=1s&timeout=2s", Upstream{}, "given twice"},
		{"a.demo.svc:8443@9001/http?perTry=1s", Upstream{}, "want timeout=DUR or retries=N"},
		{"a.demo.svc:8443@9001/http?", Upstream{}, "want timeout=DUR or retries=N"},
		{"a.demo.svc:8443@9001/h2c", Upstream{}, "want tcp or http"},
		{"a.demo.svc:8443@9001/", Upstream{}, "want tcp or http"},
	}
	for _, tc := range cases {
		got, err := parseUpstream(tc.in, "cluster.local")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseUpstream(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseUpstream(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestInCluster(t *testing.T) {
	for host, want := range map[string]bool{
		"a.demo.svc":                      true,
		"a.demo.svc.k8s.internal":         true,
		"web-0.web.demo.svc.k8s.internal": true,
		"1-2-3-4.demo.pod":                true,
		"1-2-3-4.demo.pod.k8s.internal":   true,
		"a.demo.svc.cluster.local":        false, // not this cluster's domain
		"svc":                             false,
		"demo.svc":                        false, // a namespace, not a Service
		"api.stripe.com":                  false,
		"10.0.0.1":                        false,
	} {
		if got := InCluster(host, "k8s.internal"); got != want {
			t.Errorf("InCluster(%q) = %v, want %v", host, got, want)
		}
	}
}

// FuzzParseUpstream: whatever parses renders back (Upstream.String) to an
// entry that parses to the same upstream, and a non-public upstream is
// either in the cluster or pinned.
func FuzzParseUpstream(f *testing.F) {
	for _, s := range []string{"preference.demo.svc:8443@9001", "tls://api.stripe.com:443@9002",
		"vm.example:1@2#spiffe://cluster.local/ns/a/sa/b", "tls://@#", "x.y.pod:1@1", "TLS://A.B:1@1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseUpstream(s, "cluster.local")
		if err != nil {
			return
		}
		again, err := parseUpstream(u.String(), "cluster.local")
		if err != nil || again != u {
			t.Fatalf("round trip %q -> %q -> %+v, %v", s, u.String(), again, err)
		}
		if !u.Public && u.ID == "" && !InCluster(u.Host, "cluster.local") {
			t.Fatalf("%q: an unpinned mesh upstream outside the cluster was accepted", s)
		}
		if u.Public && u.ID != "" {
			t.Fatalf("%q: a public upstream with a pinned SPIFFE ID", s)
		}
	})
}

// TestUpstreamPolicyRoundTrip: String renders what parseUpstream reads, and a
// request policy on an upstream that forwards connections is refused.
func TestUpstreamPolicyRoundTrip(t *testing.T) {
	for _, in := range []string{"a.demo.svc:8443@9001/http?timeout=250ms&retries=3", "a.demo.svc:8443@9001/http?retries=1#spiffe://cluster.local/ns/demo/sa/a"} {
		u, err := parseUpstream(in, "")
		if err != nil || u.String() != in {
			t.Errorf("parseUpstream(%q).String() = %q, %v", in, u.String(), err)
		}
	}
	for _, tc := range []struct {
		mode, upstream, wantErr string
	}{
		{"http", "a.demo.svc:8443@9001?timeout=5s", ""},
		{"tcp", "a.demo.svc:8443@9001/http?timeout=5s", ""},
		{"tcp", "a.demo.svc:8443@9001?timeout=5s", "forwarded, not its requests"},
		{"http", "a.demo.svc:8443@9001/tcp?retries=1", "forwarded, not its requests"},
	} {
		_, _, err := Parse(map[string]string{Mode: tc.mode, Upstreams: tc.upstream}, "demo", Defaults{})
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("mode %s, upstreams %q: err %v, want %q", tc.mode, tc.upstream, err, tc.wantErr)
		}
	}
}
