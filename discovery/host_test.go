package discovery

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParseHost(t *testing.T) {
	const callerNS, cd = "shop", "cluster.local"
	svc := func(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }
	for _, tt := range []struct {
		host          string
		clusterDomain string
		want          types.NamespacedName
		ok            bool
	}{
		{host: "preference.demo.svc", want: svc("demo", "preference"), ok: true},
		{host: "preference.demo.svc.cluster.local", want: svc("demo", "preference"), ok: true},
		{host: "preference.demo.svc.cluster.local.", want: svc("demo", "preference"), ok: true},
		{host: "Preference.Demo.SVC", want: svc("demo", "preference"), ok: true},
		{host: "preference.demo", want: svc("demo", "preference"), ok: true},
		{host: "preference", want: svc(callerNS, "preference"), ok: true},
		{host: "preference.demo.svc.corp.example", clusterDomain: "corp.example", want: svc("demo", "preference"), ok: true},
		{host: "preference.demo.svc.cluster.local", clusterDomain: "corp.example"},
		{host: "preference.demo.svc.other.local"},
		{host: "preference.demo.cluster.local"},
		{host: "shop.example.com"},
		{host: "a.b.c.d"},
		{host: ""},
		{host: "."},
		{host: ".demo.svc"},
		{host: "preference..svc"},
		{host: "1preference.demo.svc"}, // Service names start with a letter
		{host: "preference.demo_ns.svc"},
		{host: "-preference.demo.svc"},
		{host: "preference.demo.svc:8443"},
		{host: "10.0.0.1"},
		{host: "[::1]"},
		{host: strings.Repeat("a", 64) + ".demo.svc"},
		{host: "preference." + strings.Repeat("n", 64) + ".svc"},
		{host: "x" + strings.Repeat(".x", 200)},
	} {
		t.Run(tt.host, func(t *testing.T) {
			cdom := tt.clusterDomain
			if cdom == "" {
				cdom = cd
			}
			got, ok := ParseHost(tt.host, callerNS, cdom)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("ParseHost(%q) = %v, %v; want %v, %v", tt.host, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzParseHost: a parsed host names a valid Service and namespace, and the
// canonical host of the result parses to itself.
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"preference.demo.svc", "preference.demo.svc.cluster.local", "preference.demo",
		"preference", "shop.example.com", "", ".", "a..svc", "A.B.SVC.", "x.y.svc.cluster.local.extra", "\x00.demo.svc"} {
		f.Add(s, "demo")
	}
	f.Fuzz(func(t *testing.T, host, callerNS string) {
		got, ok := ParseHost(host, callerNS, "cluster.local")
		if !ok {
			return
		}
		if len(validation.IsDNS1035Label(got.Name)) > 0 || len(validation.IsDNS1123Label(got.Namespace)) > 0 {
			t.Fatalf("ParseHost(%q) = %v: invalid name", host, got)
		}
		again, ok := ParseHost(ServiceHost(got), "", "cluster.local")
		if !ok || again != got {
			t.Fatalf("ParseHost(ServiceHost(%v)) = %v, %v", got, again, ok)
		}
	})
}
