package options

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podtls/podtls/contract"
)

func TestModeForVersion(t *testing.T) {
	for _, tt := range []struct {
		major, minor string
		want         contract.Placement
	}{
		{"1", "34", contract.SidecarModeNative}, {"1", "29", contract.SidecarModeNative}, {"1", "29+", contract.SidecarModeNative},
		{"1", "28", contract.SidecarModeLegacy}, {"1", "28+", contract.SidecarModeLegacy}, {"2", "0", contract.SidecarModeNative}, {"", "", contract.SidecarModeLegacy},
	} {
		if got := modeForVersion(tt.major, tt.minor); got != tt.want {
			t.Errorf("%s.%s: got %s, want %s", tt.major, tt.minor, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{"defaults", func(*Options) {}, ""},
		{"bad trust domain", func(o *Options) { o.TrustDomain = "Cluster.Local" }, "--trust-domain"},
		{"bad webhook addr", func(o *Options) { o.WebhookAddr = "9443" }, "--webhook-addr"},
		{"webhook url with path", func(o *Options) { o.WebhookURL = "https://127.0.0.1:9443/mutate" }, "--webhook-url"},
		{"webhook url http", func(o *Options) { o.WebhookURL = "http://127.0.0.1:9443" }, "--webhook-url"},
		{"bad mode", func(o *Options) { o.SidecarMode = "sidecar" }, "--sidecar-mode"},
		{"bad pull policy", func(o *Options) { o.SidecarPullPolicy = "Sometimes" }, "--sidecar-image-pull-policy"},
		{"bad memory", func(o *Options) { o.SidecarMemoryMax = "lots" }, "--sidecar-memory-limit"},
		{"cpu limit", func(o *Options) { o.SidecarCPULimit = "500m" }, ""},
		{"bad cpu limit", func(o *Options) { o.SidecarCPULimit = "fast" }, "--sidecar-cpu-limit"},
		{"bad log level", func(o *Options) { o.LogLevel = "trace" }, "--log-level"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.mutate(&o)
			err := o.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o.CAURL != "https://podtls-controller.podtls-system.svc:8443" {
					t.Errorf("derived CA URL %q", o.CAURL)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

// TestFlagsDocumented keeps docs/controller.md in step with the flags.
func TestFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "controller.md"))
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("podtls-controller", flag.ContinueOnError)
	o := DefaultOptions()
	o.BindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			t.Errorf("--%s has no help text", f.Name)
		}
		if !strings.Contains(string(doc), "`--"+f.Name+"`") {
			t.Errorf("--%s is not documented in docs/controller.md", f.Name)
		}
	})
}

// TestInjectConfigResources: the resource flags reach the template, and
// combinations that cannot work stop the controller at start-up.
func TestInjectConfigResources(t *testing.T) {
	for _, tt := range []struct {
		name     string
		mutate   func(*Options)
		wantErr  string
		cpuLimit string
	}{
		{"defaults: no cpu limit", func(*Options) {}, "", ""},
		{"cpu limit", func(o *Options) { o.SidecarCPULimit = "1" }, "", "1"},
		{"cpu request above limit", func(o *Options) { o.SidecarCPU = "2"; o.SidecarCPULimit = "1" }, "cpu request 2", ""},
		{"memory limit too small", func(o *Options) { o.SidecarMemoryMax = "16Mi" }, "memory limit 16Mi", ""},
		{"memory request above limit", func(o *Options) { o.SidecarMemory = "256Mi" }, "memory request 256Mi", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.mutate(&o)
			cfg, err := InjectConfig(o, contract.SidecarModeNative, "test", "")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, ok := cfg.Template.Resources.Limits["cpu"]
			if tt.cpuLimit == "" && ok || tt.cpuLimit != "" && got.String() != tt.cpuLimit {
				t.Errorf("cpu limit %v (set %v), want %q", got.String(), ok, tt.cpuLimit)
			}
		})
	}
}
