package dnsrecords

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/contract"
)

func TestRelevant(t *testing.T) {
	svc := func(ann map[string]string, ip string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Annotations: ann, ResourceVersion: "1"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
		if ip != "" {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		}
		return s
	}
	asks := map[string]string{contract.DNSRecords: "true"}
	withStatus := map[string]string{contract.DNSRecords: "true", contract.DNSRecordsStatus: `{"state":"published"}`}
	pod := func(hosts string, labels map[string]string, phase corev1.PodPhase) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: labels}, Status: corev1.PodStatus{Phase: phase}}
		if hosts != "" {
			p.Annotations = map[string]string{contract.ExternalHosts: hosts}
		}
		return p
	}
	web := map[string]string{"app": "web"}
	node := func(addr string, hb int64) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Generation: hb},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}}}
	}
	tests := []struct {
		name     string
		old, obj client.Object
		want     bool
	}{
		{"service created asking", nil, svc(asks, ""), true},
		{"service created not asking", nil, svc(nil, ""), false},
		{"load balancer address assigned", svc(asks, ""), svc(asks, "192.0.2.1"), true},
		{"load balancer address of a service not asking", svc(nil, ""), svc(nil, "192.0.2.1"), false},
		{"annotation removed", svc(asks, "192.0.2.1"), svc(nil, "192.0.2.1"), true},
		{"only the status annotation written", svc(asks, "192.0.2.1"), svc(withStatus, "192.0.2.1"), false},
		{"pod created with hosts", nil, pod("a.example.test", web, ""), true},
		{"pod without hosts", nil, pod("", web, ""), false},
		{"pod status update", pod("a.example.test", web, corev1.PodPending), pod("a.example.test", web, corev1.PodRunning), false},
		{"pod relabelled", pod("a.example.test", web, ""), pod("a.example.test", map[string]string{"app": "other"}, ""), true},
		{"node created", nil, node("10.0.0.1", 1), true},
		{"node heartbeat", node("10.0.0.1", 1), node("10.0.0.1", 2), false},
		{"node address changed", node("10.0.0.1", 1), node("10.0.0.2", 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Relevant(tt.old, tt.obj); got != tt.want {
				t.Fatalf("Relevant = %v, want %v", got, tt.want)
			}
		})
	}
}
