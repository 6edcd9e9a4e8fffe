package check

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/inject"
)

func TestAppFiles(t *testing.T) {
	filesPod := func(name string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: map[string]string{contract.AppCerts: "/etc/tls"}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.2.4"}}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}}
		if _, err := inject.Mutate(p, ns, inject.DefaultConfig()); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const current = `[{"source":"mesh","written":true,"serial":"1f","last_reload":"signal: ok at 2026-12-03T08:00:00Z"}]`
	for _, tc := range []struct {
		name   string
		answer string
		want   output.Level
		object string
	}{
		{"current", current, output.OK, "1 pod checked"},
		{"write failed", `[{"source":"mesh","written":true,"error":"write mesh files: no space left on device"}]`, output.Fail, "shop/files: mesh: write mesh files: no space left on device"},
		{"not written yet", `[{"source":"mesh","written":false}]`, output.Warn, "shop/files: mesh files not written yet"},
		{"reload failed", `[{"source":"mesh","written":true,"last_reload":"signal: SIGHUP to pid 7 (nginx): operation not permitted"}]`, output.Warn,
			"shop/files: last signal reload failed: SIGHUP to pid 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []runtime.Object{filesPod("files"), injectedPod(t, "proxy-only", corev1.PodRunning)}
			opts := DefaultOptions()
			opts.Now = func() time.Time { return now }
			opts.Proxy = func(_ context.Context, ns, pod, path string) ([]byte, error) {
				switch {
				case path == "plaintext":
					return []byte(loopbackJSON), nil
				case path == "app-certs" && pod == "files":
					return []byte(tc.answer), nil
				}
				t.Errorf("read %s/%s %s", ns, pod, path)
				return nil, nil
			}
			rep := Run(context.Background(), fake.NewClientset(objs...), opts)
			var got *Result
			for i := range rep.Checks {
				if rep.Checks[i].ID == IDAppFiles {
					got = &rep.Checks[i]
				}
			}
			if got == nil {
				t.Fatal("no app-files check")
			}
			if got.Level != tc.want || !strings.Contains(got.Message+"\n"+strings.Join(got.Objects, "\n"), tc.object) {
				t.Fatalf("%s: %s, objects %q; want %s with %q", got.Level, got.Message, got.Objects, tc.want, tc.object)
			}
		})
	}
}
