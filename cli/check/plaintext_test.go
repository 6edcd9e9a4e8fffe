package check

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

func injectedPod(t *testing.T, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: map[string]string{contract.Inbound: "8443:8080"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status: corev1.PodStatus{Phase: phase, PodIP: "10.1.2.3"}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}}
	if _, err := inject.Mutate(p, ns, inject.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	exposedJSON  = `{"enabled":true,"checked_at":"2026-11-24T11:59:00Z","ports":[{"port":8080,"exposed":true,"addresses":["10.1.2.3:8080"],"fix":"bind the app to 127.0.0.1:8080"}]}`
	loopbackJSON = `{"enabled":true,"checked_at":"2026-11-24T11:59:00Z","ports":[{"port":8080,"exposed":false}]}`
)

func TestPlaintextBypass(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "pods/proxy"}, "x")
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods/proxy"}, "x", nil)
	for _, tc := range []struct {
		name    string
		pods    map[string]corev1.PodPhase
		answers map[string]any // pod name -> JSON string or error
		want    output.Level
		object  string
	}{
		{"no injected pods", nil, nil, output.OK, "0 running sidecars"},
		{"loopback only", map[string]corev1.PodPhase{"a": corev1.PodRunning, "b": corev1.PodRunning},
			map[string]any{"a": loopbackJSON, "b": loopbackJSON}, output.OK, "2 running sidecars"},
		{"one exposed", map[string]corev1.PodPhase{"a": corev1.PodRunning, "b": corev1.PodRunning},
			map[string]any{"a": loopbackJSON, "b": exposedJSON}, output.Fail, "shop/b: port 8080 at 10.1.2.3:8080: bind the app to 127.0.0.1:8080"},
		{"exposed beats unknown", map[string]corev1.PodPhase{"a": corev1.PodRunning, "b": corev1.PodRunning},
			map[string]any{"a": notFound, "b": exposedJSON}, output.Fail, "shop/b"},
		{"older sidecar", map[string]corev1.PodPhase{"a": corev1.PodRunning},
			map[string]any{"a": notFound}, output.Warn, "shop/a: the sidecar does not report it"},
		{"not checked yet", map[string]corev1.PodPhase{"a": corev1.PodRunning},
			map[string]any{"a": `{"enabled":true}`}, output.Warn, "shop/a: not checked yet"},
		{"turned off", map[string]corev1.PodPhase{"a": corev1.PodRunning},
			map[string]any{"a": `{"enabled":false,"reason":"turned off"}`}, output.Warn, "not checked: turned off"},
		{"proxy forbidden", map[string]corev1.PodPhase{"a": corev1.PodRunning},
			map[string]any{"a": forbidden}, output.Warn, "forbidden"},
		{"pending pod is not read", map[string]corev1.PodPhase{"a": corev1.PodPending}, nil, output.OK, "0 running sidecars"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			for name, phase := range tc.pods {
				objs = append(objs, injectedPod(t, name, phase))
			}
			var mu sync.Mutex
			read := map[string]bool{}
			opts := DefaultOptions()
			opts.Now = func() time.Time { return now }
			opts.Proxy = func(_ context.Context, ns, pod, path string) ([]byte, error) {
				mu.Lock()
				read[pod] = true
				mu.Unlock()
				if ns != "shop" || path != "plaintext" {
					t.Errorf("read %s/%s %s", ns, pod, path)
				}
				switch a := tc.answers[pod].(type) {
				case string:
					return []byte(a), nil
				case error:
					return nil, a
				}
				t.Errorf("unexpected read of %s", pod)
				return nil, nil
			}
			rep := Run(context.Background(), fake.NewClientset(objs...), opts)
			var got *Result
			for i := range rep.Checks {
				if rep.Checks[i].ID == IDPlaintextBypass {
					got = &rep.Checks[i]
				}
			}
			if got == nil {
				t.Fatal("no plaintext-bypass check")
			}
			if got.Level != tc.want || !strings.Contains(got.Message+"\n"+strings.Join(got.Objects, "\n"), tc.object) {
				t.Fatalf("%s: %s, objects %q; want %s with %q", got.Level, got.Message, got.Objects, tc.want, tc.object)
			}
			if tc.want != output.OK && got.Hint == "" {
				t.Error("no hint")
			}
			if len(read) != len(tc.answers) {
				t.Errorf("read %v, want the running injected pods %v", read, tc.answers)
			}
		})
	}
}
