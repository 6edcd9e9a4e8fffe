package dnsrecords

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podtls/podtls/contract"
)

func TestWanted(t *testing.T) {
	pod := func(ns, name, app, hosts string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app},
			Annotations: map[string]string{contract.ExternalHosts: hosts}}}
	}
	svc := func(ns, name, app, ann string, ingress ...corev1.LoadBalancerIngress) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{contract.DNSRecords: ann}},
			Spec:   corev1.ServiceSpec{Selector: map[string]string{"app": app}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: ingress}}}
	}
	pods := []corev1.Pod{pod("shop", "web-1", "web", "shop.example.test,*.shop.example.test"), pod("shop", "web-2", "web", "shop.example.test"),
		pod("shop", "api-1", "api", "api.example.org"), pod("zoo", "web-1", "web", "zoo.example.test")}
	nodes := []corev1.Node{
		{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.2"}}}},
		{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.3"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.3"}}}},
	}
	allowShopOnly := func(ns, host string) bool { return ns == "shop" && strings.HasSuffix(host, "shop.example.test") }
	tests := []struct {
		name     string
		services []corev1.Service
		want     []string
		problems []string
	}{
		{"load balancer IPs: A and AAAA for every host of the selected pods",
			[]corev1.Service{svc("shop", "web", "web", "true", corev1.LoadBalancerIngress{IP: "198.51.100.7"}, corev1.LoadBalancerIngress{IP: "2001:db8::7"})},
			[]string{"*.shop.example.test 60 A 198.51.100.7", "*.shop.example.test 60 AAAA 2001:db8::7", "shop.example.test 60 A 198.51.100.7", "shop.example.test 60 AAAA 2001:db8::7"}, nil},
		{"load balancer hostname: CNAME",
			[]corev1.Service{svc("shop", "web", "web", "true", corev1.LoadBalancerIngress{Hostname: "abc.elb.example.net"})},
			[]string{"*.shop.example.test 60 CNAME abc.elb.example.net", "shop.example.test 60 CNAME abc.elb.example.net"}, nil},
		{"no address yet: nothing", []corev1.Service{svc("shop", "web", "web", "true")}, nil, nil},
		{"nodes: external address, else internal",
			[]corev1.Service{svc("shop", "web", "web", "nodes")},
			[]string{"*.shop.example.test 60 A 10.250.0.2,203.0.113.3", "shop.example.test 60 A 10.250.0.2,203.0.113.3"}, nil},
		{"explicit addresses", []corev1.Service{svc("shop", "web", "web", "192.0.2.1, 192.0.2.2")},
			[]string{"*.shop.example.test 60 A 192.0.2.1,192.0.2.2", "shop.example.test 60 A 192.0.2.1,192.0.2.2"}, nil},
		{"explicit hostname", []corev1.Service{svc("shop", "web", "web", "edge.example.net.")},
			[]string{"*.shop.example.test 60 CNAME edge.example.net", "shop.example.test 60 CNAME edge.example.net"}, nil},
		{"outside the zone", []corev1.Service{svc("shop", "api", "api", "192.0.2.1")}, nil, []string{"shop/api: api.example.org is outside the zone example.test"}},
		{"not allowed for the namespace", []corev1.Service{svc("zoo", "web", "web", "192.0.2.1")}, nil,
			[]string{"zoo/web: zoo.example.test is not allowed for namespace zoo"}},
		{"bad value", []corev1.Service{svc("shop", "web", "web", "yes please")}, nil, []string{`shop/web: annotation podtls.io/dns-records: "yes please" is not an IP address`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := Wanted(Inputs{Services: tt.services, Pods: pods, Nodes: nodes, Zone: "example.test.", TTL: 60, Allowed: allowShopOnly})
			var lines []string
			for _, d := range got {
				lines = append(lines, d.Record.Normalize().String())
			}
			if strings.Join(lines, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("records\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(tt.want, "\n"))
			}
			var msgs []string
			for _, p := range problems {
				msgs = append(msgs, p.Service+": "+p.Message)
			}
			if len(msgs) != len(tt.problems) {
				t.Fatalf("problems %q, want %q", msgs, tt.problems)
			}
			for i := range msgs {
				if !strings.HasPrefix(msgs[i], tt.problems[i]) {
					t.Fatalf("problem %q, want %q", msgs[i], tt.problems[i])
				}
			}
		})
	}
}

// FuzzWanted feeds arbitrary annotation values, load balancer fields and
// external hosts: whatever Wanted returns is publishable (a bad value of
// one Service must never make the zone's one UPDATE fail for all), inside
// the zone, and every refusal names the Service.
func FuzzWanted(f *testing.F) {
	f.Add("true", "192.0.2.1", "", "shop.example.test")
	f.Add("true", "", "lb-1.elb.example.net.", "shop.example.test")
	f.Add("nodes", "", "", "a.example.test,b.example.test")
	f.Add("192.0.2.7, 2001:db8::7", "", "", "x.example.test")
	f.Add("lb.example.net", "", "", "example.test")
	f.Add("bad host.example.net", "", "bad name..", "*.example.test")
	f.Add("::ffff:192.0.2.1", "not-an-ip", "", "shop.example.test")
	f.Fuzz(func(t *testing.T, ann, ip, hostname, hosts string) {
		pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{contract.ExternalHosts: hosts}}}
		svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: map[string]string{contract.DNSRecords: ann}},
			Spec:   corev1.ServiceSpec{Selector: map[string]string{"app": "web"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip, Hostname: hostname}}}}}
		node := corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
		out, problems := Wanted(Inputs{Services: []corev1.Service{svc}, Pods: []corev1.Pod{pod}, Nodes: []corev1.Node{node}, Zone: "example.test", TTL: 60})
		for _, d := range out {
			if _, err := toRRs(d.Record); err != nil {
				t.Fatalf("unpublishable %s: %v", d.Record, err)
			}
			if d.Name != "example.test" && !strings.HasSuffix(d.Name, ".example.test") {
				t.Fatalf("%s outside the zone", d.Record)
			}
			if len(d.Targets) == 0 {
				t.Fatalf("%s without targets", d.Record)
			}
			if d.Type == TypeCNAME && (d.Name == "example.test" || len(d.Targets) != 1 || validation.IsDNS1123Subdomain(strings.TrimPrefix(d.Targets[0], "*.")) != nil) {
				t.Fatalf("bad CNAME %s", d.Record)
			}
		}
		for _, p := range problems {
			if p.Service != "shop/web" || p.Message == "" {
				t.Fatalf("problem %+v", p)
			}
		}
	})
}
