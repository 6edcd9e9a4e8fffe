package ca

import (
	"errors"
	"slices"
	"testing"
)

// web0 is pod web-0 of a StatefulSet "web" in namespace demo: spec.hostname
// web-0, spec.subdomain web, selected by the headless Service web.
var web0 = PodFacts{Services: []string{"web"}, Headless: []string{"web"}, Hostname: "web-0", Subdomain: "web"}

func TestSignPodDNSNames(t *testing.T) {
	web1 := web0
	web1.Hostname = "web-1"
	pods := &fakePods{byPod: map[string]PodFacts{
		"demo/web-0": web0,
		"demo/web-1": web1,
		"prod/web-0": web0, // same hostname and subdomain, another namespace
		// Same hostname and subdomain, but web is a ClusterIP Service: no DNS record.
		"demo/not-headless": {Services: []string{"web"}, Hostname: "web-0", Subdomain: "web"},
		// No Service named like the subdomain selects this pod.
		"demo/no-service":   {Services: []string{"db"}, Headless: []string{"db"}, Hostname: "web-0", Subdomain: "web"},
		"demo/no-subdomain": {Services: []string{"web"}, Headless: []string{"web"}, Hostname: "web-0"},
		"demo/no-hostname":  {Services: []string{"web"}, Headless: []string{"web"}, Subdomain: "web"},
	}}
	own := []string{"web-0.web.demo.svc", "web-0.web.demo.svc.cluster.local"}
	svcNames := []string{"web.demo.svc", "web.demo.svc.cluster.local"}
	tests := []struct {
		name    string
		ns, pod string
		cluster string
		dns     []string // asked for in the CSR
		wantErr error
		wantDNS []string
	}{
		{name: "right pod gets its names without asking", ns: "demo", pod: "web-0",
			wantDNS: append(slices.Clone(svcNames), own...)},
		{name: "right pod may ask for them", ns: "demo", pod: "web-0", dns: own,
			wantDNS: append(slices.Clone(own), svcNames...)},
		{name: "upper case and trailing dot are normalised", ns: "demo", pod: "web-0", dns: []string{"WEB-0.Web.DEMO.svc."},
			wantDNS: append([]string{"web-0.web.demo.svc"}, svcNames[0], svcNames[1], own[1])},
		{name: "cluster-domain form alone", ns: "demo", pod: "web-0", dns: own[1:],
			wantDNS: append([]string{own[1]}, svcNames[0], svcNames[1], own[0])},
		{name: "configured cluster domain", ns: "demo", pod: "web-0", cluster: "example.internal",
			dns:     []string{"web-0.web.demo.svc.example.internal"},
			wantDNS: []string{"web-0.web.demo.svc.example.internal", "web.demo.svc", "web.demo.svc.example.internal", "web-0.web.demo.svc"}},
		{name: "default cluster domain refused under another", ns: "demo", pod: "web-0", cluster: "example.internal",
			dns: own[1:], wantErr: ErrForbidden},
		{name: "other pod of the namespace cannot ask", ns: "demo", pod: "web-1", dns: own[:1], wantErr: ErrForbidden},
		{name: "other pod of the namespace gets its own", ns: "demo", pod: "web-1",
			wantDNS: append(slices.Clone(svcNames), "web-1.web.demo.svc", "web-1.web.demo.svc.cluster.local")},
		{name: "other namespace cannot ask", ns: "prod", pod: "web-0", dns: own[:1], wantErr: ErrForbidden},
		{name: "other namespace gets its own namespace's name", ns: "prod", pod: "web-0",
			wantDNS: []string{"web.prod.svc", "web.prod.svc.cluster.local", "web-0.web.prod.svc", "web-0.web.prod.svc.cluster.local"}},
		{name: "Service not headless: no pod name", ns: "demo", pod: "not-headless", wantDNS: svcNames},
		{name: "Service not headless: asking is refused", ns: "demo", pod: "not-headless", dns: own[:1], wantErr: ErrForbidden},
		{name: "no headless Service named like the subdomain", ns: "demo", pod: "no-service",
			wantDNS: []string{"db.demo.svc", "db.demo.svc.cluster.local"}},
		{name: "no headless Service: asking is refused", ns: "demo", pod: "no-service", dns: own[:1], wantErr: ErrForbidden},
		{name: "hostname without subdomain: no pod name", ns: "demo", pod: "no-subdomain", wantDNS: svcNames},
		{name: "hostname without subdomain: asking is refused", ns: "demo", pod: "no-subdomain", dns: own[:1], wantErr: ErrForbidden},
		{name: "subdomain without hostname: no pod name", ns: "demo", pod: "no-hostname", wantDNS: svcNames},
		{name: "three labels in front refused", ns: "demo", pod: "web-0", dns: []string{"x.web-0.web.demo.svc"}, wantErr: ErrForbidden},
		{name: "wildcard for the pods refused", ns: "demo", pod: "web-0", dns: []string{"*.web.demo.svc"}, wantErr: ErrForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAuthority(t, Config{Pods: pods, ClusterDomain: tc.cluster})
			caller := Caller{Namespace: tc.ns, ServiceAccount: "web", PodName: tc.pod, PodUID: "uid"}
			got, err := a.Sign(t.Context(), caller, makeCSR(t, csrSpec{dns: tc.dns}), 0)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Sign error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !slices.Equal(got.Certificate.DNSNames, tc.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", got.Certificate.DNSNames, tc.wantDNS)
			}
			verifyChain(t, a, got)
		})
	}
}

func TestPodDNSNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  PodFacts
		want []string
	}{
		{"statefulset pod", web0, []string{"web-0.web.demo.svc", "web-0.web.demo.svc.cluster.local"}},
		{"no hostname", PodFacts{Headless: []string{"web"}, Subdomain: "web"}, nil},
		{"no subdomain", PodFacts{Headless: []string{"web"}, Hostname: "web-0"}, nil},
		{"subdomain is not a headless Service selecting the pod", PodFacts{Headless: []string{"db"}, Hostname: "web-0", Subdomain: "web"}, nil},
		{"invalid hostname", PodFacts{Headless: []string{"web"}, Hostname: "Web_0", Subdomain: "web"}, nil},
		{"dotted hostname", PodFacts{Headless: []string{"web"}, Hostname: "a.web-0", Subdomain: "web"}, nil},
		{"dotted subdomain", PodFacts{Headless: []string{"x.web"}, Hostname: "web-0", Subdomain: "x.web"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := podDNSNames(tc.pod, "demo", "cluster.local"); !slices.Equal(got, tc.want) {
				t.Errorf("podDNSNames = %q, want %q", got, tc.want)
			}
		})
	}
}
