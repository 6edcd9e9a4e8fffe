package manifest

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const stream = `# a comment before the first document
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {podtls.io/inject: enabled}
---
apiVersion: v1
kind: ConfigMap   # passes through byte for byte
metadata: {name: cfg, namespace: shop}
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: web:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: job:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: untouched, namespace: other}
spec:
  containers: [{name: app, image: app:1}]
`

// mark adds a container to every pod it sees, and records the namespace labels.
func mark(seen map[string]map[string]string) Func {
	return func(p *corev1.Pod, labels map[string]string) (string, error) {
		seen[p.Namespace+"/"+p.Name] = labels
		if p.Namespace == "other" {
			return "skipped", nil
		}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "added", Image: "x"})
		return "", nil
	}
}

func TestTransform(t *testing.T) {
	seen := map[string]map[string]string{}
	var out bytes.Buffer
	res, err := Transform(strings.NewReader(stream), &out, mark(seen), Options{Namespace: "batch"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("results %+v", res)
	}
	want := []Result{
		{Kind: "Deployment", Name: "web", Namespace: "shop", Changed: true},
		{Kind: "CronJob", Name: "nightly", Namespace: "batch", Changed: true},
		{Kind: "Pod", Name: "untouched", Namespace: "other", Note: "skipped"},
	}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("result %d: %+v, want %+v", i, res[i], want[i])
		}
	}
	if seen["shop/web"]["podtls.io/inject"] != "enabled" {
		t.Errorf("namespace labels from the stream not passed: %v", seen["shop/web"])
	}
	if seen["batch/nightly"] != nil {
		t.Errorf("unknown namespace must have nil labels: %v", seen["batch/nightly"])
	}
	docs := strings.Split(out.String(), "---\n")
	if len(docs) != 5 {
		t.Fatalf("%d documents out:\n%s", len(docs), out.String())
	}
	if !strings.Contains(docs[1], "kind: ConfigMap   # passes through byte for byte") {
		t.Errorf("unchanged document rewritten:\n%s", docs[1])
	}
	if !strings.Contains(docs[4], "metadata: {name: untouched, namespace: other}") {
		t.Errorf("pod left alone was rewritten:\n%s", docs[4])
	}
	var cj struct {
		Spec struct {
			JobTemplate struct {
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			} `json:"jobTemplate"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(docs[3]), &cj); err != nil {
		t.Fatal(err)
	}
	tmpl := cj.Spec.JobTemplate.Spec.Template
	if len(tmpl.Spec.Containers) != 2 || tmpl.Spec.RestartPolicy != corev1.RestartPolicyNever || tmpl.Namespace != "" || tmpl.Name != "" {
		t.Errorf("cronjob template: %+v", tmpl)
	}
}

func TestTransformErrors(t *testing.T) {
	for name, in := range map[string]string{
		"not yaml":         "kind: [",
		"unknown field":    "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containerz: []}\n",
		"missing template": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Transform(strings.NewReader(in), &bytes.Buffer{}, mark(map[string]map[string]string{}), Options{})
			if err == nil {
				t.Error("want an error")
			}
		})
	}
}

// FuzzTransform: any input is either rejected or transformed without panics,
// and the identity transformation writes every document back unchanged.
func FuzzTransform(f *testing.F) {
	f.Add([]byte(stream))
	f.Add([]byte("apiVersion: v1\nkind: Pod\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		identity := func(*corev1.Pod, map[string]string) (string, error) { return "", nil }
		res, err := Transform(bytes.NewReader(in), &out, identity, Options{})
		if err != nil {
			return
		}
		for _, r := range res {
			if r.Changed {
				t.Fatalf("identity changed %+v", r)
			}
		}
	})
}

func TestTransformList(t *testing.T) {
	const list = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: shop}
  spec: {containers: [{name: app, image: a:1}]}
- apiVersion: v1
  kind: Service
  metadata: {name: s, namespace: shop}
`
	seen := map[string]map[string]string{}
	var out bytes.Buffer
	res, err := Transform(strings.NewReader(list), &out, mark(seen), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || !res[0].Changed || res[0].Name != "a" {
		t.Fatalf("results %+v", res)
	}
	var got struct {
		Items []map[string]any `json:"items"`
	}
	if err := yaml.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Items) != 2 || !strings.Contains(out.String(), "name: added") || got.Items[1]["kind"] != "Service" {
		t.Errorf("list out:\n%s", out.String())
	}
}
