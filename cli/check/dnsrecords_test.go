package check

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/acmetest"
)

func recordsService(name string, st *contract.DNSRecordState) *corev1.Service {
	ann := map[string]string{contract.DNSRecords: "true"}
	if st != nil {
		ann[contract.DNSRecordsStatus] = st.Encode()
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: ann}}
}

func issuerCM(config string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ACMEConfigMap, Namespace: "podtls-system"}, Data: map[string]string{ACMEConfigKey: config}}
}

const recordsConfig = "directoryURL: https://acme.example/dir\ndns: {provider: cloudflare}\nrecords: {enabled: true, zone: example.com}\n"

func TestDNSRecords(t *testing.T) {
	published := &contract.DNSRecordState{State: contract.DNSRecordsPublished, Records: []string{"shop.example.com 300 A 192.0.2.1,192.0.2.2"}}
	zone := map[string][]string{"shop.example.com A": {"192.0.2.2", "192.0.2.1"}}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		zone    map[string][]string
		nsErr   error
		want    output.Level
		message string
	}{
		{"nothing asked", []runtime.Object{issuerCM(recordsConfig)}, zone, nil, output.Skip, "no Service asks"},
		{"records not enabled", []runtime.Object{issuerCM("directoryURL: https://acme.example/dir\ndns: {provider: cloudflare}\n"), recordsService("web", published)},
			zone, nil, output.Warn, "not enabled"},
		{"published and resolving", []runtime.Object{issuerCM(recordsConfig), recordsService("web", published)}, zone, nil, output.OK, "1 DNS record published, each resolving as published on ns1.example.net:53, ns2.example.net:53"},
		{"resolving elsewhere", []runtime.Object{issuerCM(recordsConfig), recordsService("web", published)},
			map[string][]string{"shop.example.com A": {"192.0.2.9"}}, nil, output.Fail, "shop/web: shop.example.com A at ns1.example.net:53: 192.0.2.9, published 192.0.2.1,192.0.2.2"},
		{"not published yet", []runtime.Object{issuerCM(recordsConfig), recordsService("web", nil)}, zone, nil, output.Warn, "shop/web: not published yet"},
		{"conflict", []runtime.Object{issuerCM(recordsConfig), recordsService("web", &contract.DNSRecordState{State: contract.DNSRecordsConflict, Message: "shop.example.com A: owned by cluster-b"})},
			zone, nil, output.Warn, "owned by cluster-b"},
		{"error", []runtime.Object{issuerCM(recordsConfig), recordsService("web", &contract.DNSRecordState{State: contract.DNSRecordsError, Message: "cannot read zone example.com: 403"})},
			zone, nil, output.Fail, "cannot read zone example.com: 403"},
		{"no nameservers", []runtime.Object{issuerCM(recordsConfig), recordsService("web", published)}, zone, errors.New("no such host"), output.Warn, "names not probed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.Now = func() time.Time { return now }
			opts.Nameservers = func(_ context.Context, z string) ([]string, error) {
				if z != "example.com" {
					t.Errorf("nameservers of %q", z)
				}
				return []string{"ns1.example.net:53", "ns2.example.net:53"}, tc.nsErr
			}
			opts.Lookup = func(_ context.Context, _, name, typ string) ([]string, error) {
				if got, ok := tc.zone[name+" "+typ]; ok {
					return slices.Clone(got), nil
				}
				return nil, errors.New("no such host")
			}
			rep := Run(context.Background(), fake.NewClientset(tc.objs...), opts)
			i := slices.IndexFunc(rep.Checks, func(c Result) bool { return c.ID == IDDNSRecords })
			if i < 0 {
				t.Fatal("no dns-records check")
			}
			got := rep.Checks[i]
			if got.Level != tc.want || !strings.Contains(got.Message+"\n"+strings.Join(got.Objects, "\n"), tc.message) {
				t.Fatalf("%s: %s %v, want %s with %q", got.Level, got.Message, got.Objects, tc.want, tc.message)
			}
		})
	}
}

// TestDNSRecordsProbesBIND asks a real authoritative server (BIND9, the
// rfc2136 provider's server) for the published name.
func TestDNSRecordsProbesBIND(t *testing.T) {
	env := acmetest.StartT(t, acmetest.Options{})
	ctx := context.Background()
	if err := env.AddRecord(ctx, "shop.example.test", "A", "192.0.2.5"); err != nil {
		t.Fatal(err)
	}
	config := "directoryURL: https://acme.example/dir\ndns: {provider: rfc2136, config: {RFC2136_NAMESERVER: '" + env.DNSAddr + "'}}\nrecords: {enabled: true, zone: example.test}\n"
	for _, tc := range []struct {
		target string
		want   output.Level
	}{{"192.0.2.5", output.OK}, {"192.0.2.6", output.Fail}} {
		st := &contract.DNSRecordState{State: contract.DNSRecordsPublished, Records: []string{"shop.example.test 60 A " + tc.target}}
		opts := DefaultOptions()
		rep := Run(ctx, fake.NewClientset(issuerCM(config), recordsService("web", st)), opts)
		i := slices.IndexFunc(rep.Checks, func(c Result) bool { return c.ID == IDDNSRecords })
		if got := rep.Checks[i]; got.Level != tc.want {
			t.Errorf("published %s: %s %s %v, want %s", tc.target, got.Level, got.Message, got.Objects, tc.want)
		}
	}
}
