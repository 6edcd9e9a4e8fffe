package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/contract"
)

func TestAppCertWarnings(t *testing.T) {
	rs := []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1", Controller: ptr.To(true)}}
	job := []metav1.OwnerReference{{Kind: "Job", Name: "batch", Controller: ptr.To(true)}}
	tests := []struct {
		name    string
		ann     map[string]string
		podUID  *int64
		fsGroup *int64
		owners  []metav1.OwnerReference
		want    []string
		wantUID int64 // the sidecar's user after injection
	}{
		{"fsGroup set by the webhook", map[string]string{contract.AppCerts: "/etc/tls"}, nil, nil, nil,
			[]string{"fsGroup to 65532"}, 65532},
		{"own fsGroup: no warning", map[string]string{contract.AppCerts: "/etc/tls"}, nil, ptr.To[int64](1000), nil, nil, 65532},
		{"signal to the app's user", map[string]string{contract.AppCerts: "/etc/tls", contract.AppCertReload: "signal"}, ptr.To[int64](101), ptr.To[int64](1), nil,
			[]string{"shareProcessNamespace", "runs as user 101"}, 101},
		{"signal to root", map[string]string{contract.AppCerts: "/etc/tls", contract.AppCertReload: "signal"}, ptr.To[int64](0), ptr.To[int64](1), nil,
			[]string{"shareProcessNamespace", "app runs as root"}, 65532},
		{"signal, user unknown", map[string]string{contract.AppCerts: "/etc/tls", contract.AppCertReload: "signal"}, nil, ptr.To[int64](1), nil,
			[]string{"shareProcessNamespace", "do not all set one runAsUser"}, 65532},
		{"restart of a Deployment's pod", map[string]string{contract.ExternalHosts: "a.example.com", contract.AppCerts: "/etc/tls",
			contract.AppCertSources: "external", contract.AppCertReload: "restart"}, nil, ptr.To[int64](1), rs, nil, 65532},
		{"restart of a Job's pod", map[string]string{contract.ExternalHosts: "a.example.com", contract.AppCerts: "/etc/tls",
			contract.AppCertSources: "external", contract.AppCertReload: "restart"}, nil, ptr.To[int64](1), job, []string{"nothing will restart it"}, 65532},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Annotations: tt.ann, OwnerReferences: tt.owners},
				Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsUser: tt.podUID, FSGroup: tt.fsGroup},
					Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}}
			res, err := Mutate(pod, ns, testConfig())
			if err != nil || !res.Mutated {
				t.Fatalf("Mutate: %v (mutated %v)", err, res.Mutated)
			}
			all := strings.Join(res.Warnings, "\n")
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("warnings lack %q:\n%s", w, all)
				}
			}
			if len(tt.want) == 0 && strings.Contains(all, "podtls: ") {
				t.Errorf("unexpected warnings:\n%s", all)
			}
			sc := pod.Spec.InitContainers[0].SecurityContext
			if *sc.RunAsUser != tt.wantUID {
				t.Errorf("sidecar runs as %d, want %d", *sc.RunAsUser, tt.wantUID)
			}
		})
	}
}

// TestFilesInInitContainers: native placement mounts the files into the
// init containers too (the sidecar has written them before they start);
// legacy placement, where init containers run before the sidecar, does not.
func TestFilesInInitContainers(t *testing.T) {
	for _, mode := range []contract.Placement{contract.SidecarModeNative, contract.SidecarModeLegacy} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Annotations: map[string]string{
			contract.AppCerts: "/etc/tls", contract.SidecarMode: string(mode)}},
			Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "migrate", Image: "m:1"}},
				Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}}
		if _, err := Mutate(pod, ns, testConfig()); err != nil {
			t.Fatal(err)
		}
		var migrate corev1.Container
		for _, c := range pod.Spec.InitContainers {
			if c.Name == "migrate" {
				migrate = c
			}
		}
		mounted := len(migrate.VolumeMounts) == 1 && migrate.VolumeMounts[0].Name == contract.AppCertsVolume
		if mounted != (mode == contract.SidecarModeNative) {
			t.Errorf("%s: init container mounts %+v", mode, migrate.VolumeMounts)
		}
		back, err := Uninject(pod)
		if err != nil {
			t.Fatal(err)
		}
		if back.Spec.InitContainers[0].VolumeMounts != nil {
			t.Errorf("%s: uninject left %+v", mode, back.Spec.InitContainers[0].VolumeMounts)
		}
	}
}
