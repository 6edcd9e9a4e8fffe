package inject

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

// testConfig is the configuration every golden file is rendered with.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Version = "test"
	cfg.Template = DefaultTemplate("registry.example/podtls-sidecar:test")
	cfg.TrustRootsPEM = "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n"
	cfg.PodCertificates = true // the cluster serves them; the default source stays the agent
	return cfg
}

// golden is the shape of a <case>.golden.yaml file.
type golden struct {
	Inject   bool         `json:"inject"`
	Reasons  []ReasonCode `json:"reasons"`
	Warnings []string     `json:"warnings,omitempty"`
	Error    string       `json:"error,omitempty"`
	Pod      *corev1.Pod  `json:"pod"`
}

// readCase reads <case>.pod.yaml: an optional Namespace document, then the Pod.
func readCase(t *testing.T, path string) (*corev1.Namespace, *corev1.Pod) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(raw, []byte("\n---\n"))
	var ns *corev1.Namespace
	if len(docs) == 2 {
		ns = &corev1.Namespace{}
		if err := yaml.UnmarshalStrict(docs[0], ns); err != nil {
			t.Fatalf("%s: namespace: %v", path, err)
		}
		docs = docs[1:]
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(docs[0], pod); err != nil {
		t.Fatalf("%s: pod: %v", path, err)
	}
	return ns, pod
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.pod.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	cfg := testConfig()
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".pod.yaml")
		t.Run(name, func(t *testing.T) {
			ns, pod := readCase(t, in)
			res, err := Mutate(pod, ns, cfg)
			got := golden{Inject: res.Decision.Inject, Reasons: res.Decision.Reasons, Warnings: res.Warnings, Pod: pod}
			if err != nil {
				got.Error = err.Error()
			}
			out, merr := yaml.Marshal(got)
			if merr != nil {
				t.Fatal(merr)
			}
			goldenPath := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(goldenPath, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test ./webhook/inject -update)", err)
			}
			// Structural comparison: formatting and key order do not matter.
			var gotTree, wantTree any
			if err := yaml.Unmarshal(out, &gotTree); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(want, &wantTree); err != nil {
				t.Fatalf("%s: %v", goldenPath, err)
			}
			if d := cmp.Diff(wantTree, gotTree); d != "" {
				t.Errorf("%s differs (-want +got; run with -update if intended):\n%s", goldenPath, d)
			}

			// Re-invocation on our own output must change nothing.
			if res.Mutated {
				again := pod.DeepCopy()
				res2, err := Mutate(again, ns, cfg)
				if err != nil || res2.Mutated || !res2.Decision.Has(ReasonAlreadyInjected) {
					t.Errorf("second run: mutated=%v reasons=%v err=%v", res2.Mutated, res2.Decision.Reasons, err)
				}
				if d := cmp.Diff(pod, again); d != "" {
					t.Errorf("second run changed the pod:\n%s", d)
				}
			}
		})
	}
}
