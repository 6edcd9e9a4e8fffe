// Package manifest applies a pod transformation (inject or uninject) to a
// multi-document YAML stream: Pods and the pod templates of Deployments,
// StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, also as items of
// a List (kubectl get -o yaml). Every other
// document, and every document the transformation leaves unchanged, is
// written back byte for byte.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Func transforms a pod in place. namespace is the object's namespace (or the
// default given to Transform) and nsLabels the labels of that namespace when
// known (nil otherwise). It returns a short note for the report, or an error.
type Func func(pod *corev1.Pod, nsLabels map[string]string) (note string, err error)

// Result describes what happened to one document.
type Result struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Changed   bool   `json:"changed"`
	Note      string `json:"note,omitempty"`
}

// Options for Transform.
type Options struct {
	// Namespace for objects without metadata.namespace.
	Namespace string
	// NamespaceLabels returns the labels of a namespace, when known from the
	// cluster (nil: unknown). Namespace documents in the stream take precedence.
	NamespaceLabels func(name string) map[string]string
}

// templatePaths says where each workload kind keeps its pod template.
var templatePaths = map[string][]string{
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// Transform reads YAML documents from r, applies fn to every pod (template),
// and writes the stream to w.
func Transform(r io.Reader, w io.Writer, fn Func, opts Options) ([]Result, error) {
	docs, err := split(r)
	if err != nil {
		return nil, err
	}
	// Namespace documents in the stream describe the namespaces of the objects after them too.
	nsLabels := map[string]map[string]string{}
	for _, d := range docs {
		var m struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name   string            `json:"name"`
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		}
		if yaml.Unmarshal(d, &m) == nil && m.Kind == "Namespace" {
			nsLabels[m.Metadata.Name] = m.Metadata.Labels
			if nsLabels[m.Metadata.Name] == nil {
				nsLabels[m.Metadata.Name] = map[string]string{}
			}
		}
	}
	var results []Result
	for i, d := range docs {
		out, res, err := transformDoc(d, fn, opts, nsLabels)
		if err != nil {
			return results, fmt.Errorf("document %d: %w", i+1, err)
		}
		results = append(results, res...)
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return results, fmt.Errorf("write: %w", err)
			}
		}
		if _, err := w.Write(out); err != nil {
			return results, fmt.Errorf("write: %w", err)
		}
	}
	return results, nil
}

// split returns the documents of a YAML stream, each ending in a newline;
// empty documents are dropped.
func split(r io.Reader) ([][]byte, error) {
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs [][]byte
	for {
		d, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read yaml: %w", err)
		}
		if len(bytes.TrimSpace(stripComments(d))) == 0 {
			continue
		}
		if !bytes.HasSuffix(d, []byte("\n")) {
			d = append(d, '\n')
		}
		docs = append(docs, d)
	}
}

func stripComments(d []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(d, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' || bytes.Equal(t, []byte("---")) {
			continue
		}
		out = append(out, line...)
	}
	return out
}

func transformDoc(doc []byte, fn Func, opts Options, streamNS map[string]map[string]string) ([]byte, []Result, error) {
	obj := map[string]any{}
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	var results []Result
	changed := false
	if kind, _ := obj["kind"].(string); kind == "List" || strings.HasSuffix(kind, "List") && obj["items"] != nil {
		// kubectl get -o yaml of several objects: a v1 List.
		items, _ := obj["items"].([]any)
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				return nil, nil, fmt.Errorf("%s item %d: not an object", kind, i+1)
			}
			res, err := transformObject(m, fn, opts, streamNS)
			if err != nil {
				return nil, nil, fmt.Errorf("%s item %d: %w", kind, i+1, err)
			}
			if res != nil {
				results = append(results, *res)
				changed = changed || res.Changed
			}
		}
	} else {
		res, err := transformObject(obj, fn, opts, streamNS)
		if err != nil {
			return nil, nil, err
		}
		if res != nil {
			results = append(results, *res)
			changed = res.Changed
		}
	}
	if !changed {
		return doc, results, nil
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, nil, fmt.Errorf("encode: %w", err)
	}
	return out, results, nil
}

// transformObject applies fn to the pod (template) of obj, in place. It
// returns nil for kinds without a pod.
func transformObject(obj map[string]any, fn Func, opts Options, streamNS map[string]map[string]string) (*Result, error) {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	namespace, _ := meta["namespace"].(string)
	if namespace == "" {
		namespace = opts.Namespace
	}
	var path []string
	switch {
	case kind == "Pod" && apiVersion == "v1":
	case templatePaths[kind] != nil && (apiVersion == "apps/v1" || apiVersion == "batch/v1"):
		path = templatePaths[kind]
	default:
		return nil, nil
	}
	res := &Result{Kind: kind, Name: name, Namespace: namespace}

	podMap := obj
	if path != nil {
		var ok bool
		if podMap, ok = lookup(obj, path); !ok {
			return nil, fmt.Errorf("%s %s: no pod template at .%s", kind, name, strings.Join(path, "."))
		}
	}
	pod := &corev1.Pod{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(podMap, pod, true); err != nil {
		return nil, fmt.Errorf("%s %s: pod: %w", kind, name, err)
	}
	pod.Namespace = namespace
	if path != nil && pod.Name == "" {
		pod.Name = name
	}
	before := pod.DeepCopy()

	labels, known := streamNS[namespace]
	if !known && opts.NamespaceLabels != nil && namespace != "" {
		labels = opts.NamespaceLabels(namespace)
	}
	note, err := fn(pod, labels)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	res.Note = note
	if reflect.DeepEqual(before, pod) {
		return res, nil
	}
	res.Changed = true

	// Write back only what a pod transformation may change: annotations and spec.
	newSpec, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&pod.Spec)
	if err != nil {
		return nil, fmt.Errorf("%s %s: encode spec: %w", kind, name, err)
	}
	podMap["spec"] = newSpec
	pm, _ := podMap["metadata"].(map[string]any)
	if pm == nil {
		pm = map[string]any{}
		podMap["metadata"] = pm
	}
	if len(pod.Annotations) == 0 {
		delete(pm, "annotations")
	} else {
		a := map[string]any{}
		for k, v := range pod.Annotations {
			a[k] = v
		}
		pm["annotations"] = a
	}
	if len(pm) == 0 && path != nil {
		delete(podMap, "metadata")
	}
	return res, nil
}

func lookup(m map[string]any, path []string) (map[string]any, bool) {
	cur := m
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}
