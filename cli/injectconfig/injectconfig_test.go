package injectconfig

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podtls/podtls/webhook/inject"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr bool
		check   func(t *testing.T, cfg inject.Config)
	}{
		{name: "defaults", args: []string{"/podtls-controller"}, check: func(t *testing.T, cfg inject.Config) {
			if cfg.CAURL != "https://podtls-controller.podtls-system.svc:8443" || cfg.TrustDomain != "cluster.local" {
				t.Errorf("%+v", cfg)
			}
		}},
		{name: "chart arguments", args: []string{"--namespace=podtls", "--trust-domain", "example.org",
			"--sidecar-image", "reg.example/sidecar:v1", "--sidecar-memory-limit", "128Mi", "--kubeconfig", "/k", "--leader-elect"},
			check: func(t *testing.T, cfg inject.Config) {
				if cfg.ControllerNamespace != "podtls" || cfg.TrustDomain != "example.org" || cfg.Template.Image != "reg.example/sidecar:v1" ||
					cfg.CAURL != "https://podtls-controller.podtls.svc:8443" {
					t.Errorf("%+v", cfg)
				}
				if q := cfg.Template.Resources.Limits[corev1.ResourceMemory]; q.String() != "128Mi" {
					t.Errorf("memory limit %s", q.String())
				}
			}},
		{name: "unknown flag", args: []string{"--no-such-flag"}, wantErr: true},
		{name: "bad quantity", args: []string{"--sidecar-cpu-request", "lots"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := ParseArgs(tc.args)
			if err == nil {
				opts.SidecarMode = "native"
				var cfg inject.Config
				cfg, err = Config(opts, "v1", "")
				if err == nil && tc.check != nil {
					tc.check(t, cfg)
				}
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
