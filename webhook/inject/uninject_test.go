package inject

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/contract"
)

// TestUninjectRoundTrip: for every golden case, Uninject(Mutate(p)) == p, and
// Uninject of a pod Mutate left alone changes nothing.
func TestUninjectRoundTrip(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.pod.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, mode := range []contract.Placement{contract.SidecarModeNative, contract.SidecarModeLegacy} {
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
	cfg.SidecarMode = contract.SidecarModeLegacy
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Annotations: map[string]string{
			contract.Inject: "true", contract.Inbound: "8443:8080",
			contract.DefaultContainer: "sidecar-of-user"}},
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
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{contract.Status: "{"}},
		Spec:       corev1.PodSpec{InitContainers: []corev1.Container{{Name: contract.ContainerName}}},
	}
	if _, err := Uninject(pod); err == nil {
		t.Error("want an error for a malformed status annotation")
	}
}

// FuzzUninject: any status annotation and placement of the sidecar either
// errors or yields a pod without the sidecar, and never touches the input.
func FuzzUninject(f *testing.F) {
	f.Add(`{"version":"v1","mode":"native","hash":"x"}`, true, "podtls-ext-1")
	f.Add(`{"mode":"legacy"}`, false, "")
	f.Add(`{`, true, "")
	f.Fuzz(func(t *testing.T, status string, native bool, external string) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{contract.Status: status,
				contract.ExternalSecret: external, contract.DefaultContainer: "app"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}},
				Volumes: []corev1.Volume{{Name: contract.CertsVolume}, {Name: external}, {Name: "data"}}},
		}
		sc := corev1.Container{Name: contract.ContainerName}
		if native {
			pod.Spec.InitContainers = []corev1.Container{sc}
		} else {
			pod.Spec.Containers = append([]corev1.Container{sc}, pod.Spec.Containers...)
		}
		before := pod.DeepCopy()
		out, err := Uninject(pod)
		if d := cmp.Diff(before, pod); d != "" {
			t.Fatalf("input changed:\n%s", d)
		}
		if err != nil {
			return
		}
		if HasSidecar(out) || len(out.Spec.Containers) != 1 {
			t.Fatalf("sidecar left: %+v", out.Spec)
		}
		for _, v := range out.Spec.Volumes {
			if v.Name == contract.CertsVolume || (external != "" && v.Name == external) {
				t.Fatalf("volume %s left", v.Name)
			}
		}
	})
}
