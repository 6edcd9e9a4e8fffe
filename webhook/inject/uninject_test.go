package inject

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/webhook/annotations"
)

// TestUninjectRoundTrip: for every golden case, Uninject(Mutate(p)) == p, and
// Uninject of a pod Mutate left alone changes nothing.
func TestUninjectRoundTrip(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.pod.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, mode := range []SidecarMode{ModeNative, ModeLegacy} {
		cfg := testConfig()
		cfg.SidecarMode = mode
		for _, in := range inputs {
			name := strings.TrimSuffix(filepath.Base(in), ".pod.yaml")
			t.Run(string(mode)+"/"+name, func(t *testing.T) {
				ns, orig := readCase(t, in)
				pod := orig.DeepCopy()
				res, _ := Mutate(pod, ns, cfg)
				back, err := Uninject(pod)
				if err != nil {
					t.Fatal(err)
				}
				want := orig
				if !res.Mutated {
					// Already-injected inputs (manual sidecar) lose the sidecar;
					// everything else must be untouched.
					if HasSidecar(orig) {
						return
					}
				}
				if d := cmp.Diff(want, back); d != "" {
					t.Errorf("Uninject(Mutate(p)) != p (-want +got):\n%s", d)
				}
				if HasSidecar(back) {
					t.Error("sidecar still present")
				}
			})
		}
	}
}

func TestUninjectKeepsUserDefaultContainer(t *testing.T) {
	cfg := testConfig()
	cfg.SidecarMode = ModeLegacy
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Annotations: map[string]string{
			annotations.Inject: "true", annotations.Inbound: "8443:8080",
			annotations.DefaultContainer: "sidecar-of-user"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "sidecar-of-user"}}},
	}
	orig := pod.DeepCopy()
	if _, err := Mutate(pod, nil, cfg); err != nil {
		t.Fatal(err)
	}
	back, err := Uninject(pod)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(orig, back); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestUninjectBadStatus(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annotations.Status: "{"}},
		Spec:       corev1.PodSpec{InitContainers: []corev1.Container{{Name: ContainerName}}},
	}
	if _, err := Uninject(pod); err == nil {
		t.Error("want an error for a malformed status annotation")
	}
}
