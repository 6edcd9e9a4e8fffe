package services

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestMatchingServices(t *testing.T) {
	svc := func(name string, sel map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	objs := []corev1.Service{
		svc("web", map[string]string{"app": "web"}),
		svc("canary", map[string]string{"app": "web", "track": "canary"}),
		svc("all", map[string]string{}), // no selector: endpoints managed by hand, never matched
		svc("db", map[string]string{"app": "db"}),
		svc("api", map[string]string{"tier": "front"}),
	}
	for _, tc := range []struct {
		labels labels.Set
		want   []string
	}{
		{labels.Set{"app": "web"}, []string{"web"}},
		{labels.Set{"app": "web", "track": "canary", "tier": "front"}, []string{"api", "canary", "web"}},
		{labels.Set{}, nil},
		{nil, nil},
	} {
		got := matchingServices(objs, tc.labels)
		if len(got) != len(tc.want) {
			t.Errorf("labels %v: got %v, want %v", tc.labels, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("labels %v: got %v, want %v", tc.labels, got, tc.want)
			}
		}
	}
}
