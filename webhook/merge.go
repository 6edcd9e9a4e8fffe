package webhook

import (
	"bytes"
	"encoding/json"
	"reflect"
)

// patchPair returns the two documents to diff for the admission patch. In the
// common case the raw request says exactly what our types encode, and the
// patch goes from our encoding of the original to the mutated pod. Otherwise
// (fields our Go types do not know, from a newer API server; non-canonical
// spellings such as "1000m") the mutated pod is rebuilt on top of the raw
// object: where the mutation changed nothing, the raw JSON is kept as it was,
// so the patch holds only podtls's additions. Lists of named objects
// (containers, volumes, env, ports, mounts) are matched by name, so unknown
// fields follow their element when the sidecar is inserted in front.
func patchPair(raw, original, mutated []byte) (from, to []byte, err error) {
	if bytes.Equal(raw, original) { // the API server encodes like we do
		return original, mutated, nil
	}
	var r, o any
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(original, &o); err != nil {
		return nil, nil, err
	}
	if reflect.DeepEqual(r, o) {
		return original, mutated, nil
	}
	var m any
	if err := json.Unmarshal(mutated, &m); err != nil {
		return nil, nil, err
	}
	merged, err := json.Marshal(merge3(r, o, m))
	return raw, merged, err
}

// merge3 returns mut, except that subtrees the mutation left alone come from raw.
func merge3(raw, orig, mut any) any {
	if raw != nil && reflect.DeepEqual(orig, mut) {
		return raw
	}
	switch t := mut.(type) {
	case map[string]any:
		r, ok := raw.(map[string]any)
		if !ok {
			return mut
		}
		o, _ := orig.(map[string]any)
		out := make(map[string]any, len(r)+len(t))
		for k, v := range r {
			out[k] = v
		}
		for k := range o {
			if _, kept := t[k]; !kept {
				delete(out, k) // the mutation removed it
			}
		}
		for k, v := range t {
			out[k] = merge3(r[k], o[k], v)
		}
		return out
	case []any:
		r, ok := raw.([]any)
		if !ok {
			return mut
		}
		o, _ := orig.([]any)
		rawByName, origByName := byName(r), byName(o)
		out := make([]any, len(t))
		for i, e := range t {
			switch name, named := nameOf(e); {
			case named:
				out[i] = merge3(rawByName[name], origByName[name], e) // a new element has no raw twin
			case len(r) == len(t) && len(o) == len(t):
				out[i] = merge3(r[i], o[i], e)
			default:
				out[i] = e
			}
		}
		return out
	default:
		return mut
	}
}

func byName(list []any) map[string]any {
	m := map[string]any{}
	for _, e := range list {
		if name, ok := nameOf(e); ok {
			m[name] = e
		}
	}
	return m
}

func nameOf(e any) (string, bool) {
	m, ok := e.(map[string]any)
	if !ok {
		return "", false
	}
	name, ok := m["name"].(string)
	return name, ok
}
