package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/podtls/podtls/e2e/mesh"
)

// Chart versions: this checkout's, and the previous release's (previousRelease), whose
// images the upgrade test tags with it.
const (
	chartVersion    = "0.2.0"
	previousVersion = "0.1.0"
)

// TestKubeVersionConstraint: the chart's kubeVersion refuses clusters older than the oldest
// supported minor (1.35) with helm's own error, and admits the supported ones, including
// the pre-release-style versions of managed clusters. Helm checks it on install, upgrade
// and template alike; template with --kube-version stands in for a cluster's version.
func TestKubeVersionConstraint(t *testing.T) {
	root := repoRoot(t)
	chart := filepath.Join(root, "charts", "podtls")
	for _, tt := range []struct {
		version string
		refused bool
	}{
		{"v1.33.7", true},
		{"v1.34.0", true},
		{"v1.34.9-eks-1", true},
		{"v1.35.0", false},
		{"v1.35.4-eks-1234", false}, // the -0 in ">=1.35.0-0" admits it
		{"v1.36.1", false},
		{"v1.37.2", false},
		{mesh.KubeVersion(), false}, // what the other offline renderings use
	} {
		t.Run(tt.version, func(t *testing.T) {
			_, err := helm(t, "template", "podtls", chart, "--namespace", systemNS, "--kube-version", tt.version)
			switch {
			case tt.refused && err == nil:
				t.Fatalf("helm template rendered the chart for Kubernetes %s", tt.version)
			case tt.refused && !strings.Contains(err.Error(), "chart requires kubeVersion: >=1.35.0-0 which is incompatible with Kubernetes"):
				t.Errorf("refused, but not by the chart's kubeVersion: %v", err)
			case !tt.refused && err != nil:
				t.Errorf("a supported version is refused: %v", err)
			}
		})
	}
}

// TestChartVersions: the chart carries the supported range, and a version above the
// previous release's, so `helm upgrade` from that (TestUpgradeOnNode) is an upgrade.
func TestChartVersions(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "charts", "podtls", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Version     string `json:"version"`
		AppVersion  string `json:"appVersion"`
		KubeVersion string `json:"kubeVersion"`
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if meta.KubeVersion != ">=1.35.0-0" {
		t.Errorf("kubeVersion %q, want >=1.35.0-0 (supported: 1.35 to 1.37)", meta.KubeVersion)
	}
	if meta.Version != chartVersion || meta.AppVersion != chartVersion {
		t.Errorf("chart %s, appVersion %s: want both %s (the images are tagged with the appVersion)", meta.Version, meta.AppVersion, chartVersion)
	}
	if chartVersion == previousVersion {
		t.Errorf("chart version %s is the previous release's", chartVersion)
	}
}
