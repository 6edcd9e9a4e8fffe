package services

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
)

func TestPodFacts(t *testing.T) {
	svc := func(name, clusterIP string, sel map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: sel, ClusterIP: clusterIP}}
	}
	objs := []corev1.Service{
		svc("web", "10.0.0.10", map[string]string{"app": "web"}),
		svc("canary", "10.0.0.11", map[string]string{"app": "web", "track": "canary"}),
		svc("all", "", map[string]string{}), // no selector: endpoints managed by hand, never matched
		svc("db", "10.0.0.12", map[string]string{"app": "db"}),
		svc("api", "10.0.0.13", map[string]string{"tier": "front"}),
		svc("peers", corev1.ClusterIPNone, map[string]string{"app": "web"}),
		svc("db-peers", corev1.ClusterIPNone, map[string]string{"app": "db"}),
		svc("manual", corev1.ClusterIPNone, nil), // headless without selector: never matched
	}
	pod := func(lbls map[string]string, hostname, subdomain string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: lbls}, Spec: corev1.PodSpec{Hostname: hostname, Subdomain: subdomain}}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want ca.PodFacts
	}{
		{"one Service and its headless twin", pod(map[string]string{"app": "web"}, "", ""),
			ca.PodFacts{Services: []string{"peers", "web"}, Headless: []string{"peers"}}},
		{"several, sorted", pod(map[string]string{"app": "web", "track": "canary", "tier": "front"}, "", ""),
			ca.PodFacts{Services: []string{"api", "canary", "peers", "web"}, Headless: []string{"peers"}}},
		{"statefulset pod reports its hostname and subdomain", pod(map[string]string{"app": "db"}, "db-0", "db-peers"),
			ca.PodFacts{Services: []string{"db", "db-peers"}, Headless: []string{"db-peers"}, Hostname: "db-0", Subdomain: "db-peers"}},
		{"subdomain naming a Service that does not select the pod", pod(nil, "x-0", "manual"),
			ca.PodFacts{Hostname: "x-0", Subdomain: "manual"}},
		{"no labels", pod(map[string]string{}, "", ""), ca.PodFacts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := podFacts(tc.pod, objs); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("podFacts = %+v, want %+v", got, tc.want)
			}
		})
	}
}
