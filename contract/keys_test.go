package contract

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestKeysDocumented checks that every podtls.io/ key declared in this package
// appears in docs/annotations.md, and that every key has a doc comment.
func TestKeysDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "annotations.md"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "keys.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			be, ok := vs.Values[0].(*ast.BinaryExpr) // Prefix + "name"
			if !ok {
				continue
			}
			lit, ok := be.Y.(*ast.BasicLit)
			if !ok {
				continue
			}
			name, _ := strconv.Unquote(lit.Value)
			key := Prefix + name
			keys++
			if gd.Doc == nil && vs.Doc == nil {
				t.Errorf("%s has no doc comment", vs.Names[0].Name)
			}
			if !strings.Contains(string(doc), "`"+key+"`") {
				t.Errorf("%s is not documented in docs/annotations.md", key)
			}
		}
	}
	if keys < 10 {
		t.Fatalf("found only %d keys: parser out of step with annotations.go", keys)
	}
}

// FuzzParseAppProbes: whatever the environment variable holds, every probe accepted is
// runnable: a valid path, one handler, a real port.
func FuzzParseAppProbes(f *testing.F) {
	f.Add(`{"/app-health/app/readyz":{"httpGet":{"port":9898,"path":"/readyz","scheme":"HTTP"}}}`)
	f.Add(`{"/app-health/app/livez":{"grpc":{"port":9999,"service":"podinfo"},"timeoutSeconds":5}}`)
	f.Add(`{"/app-health/x/startupz":{"tcpSocket":{"port":0}}}`)
	f.Fuzz(func(t *testing.T, data string) {
		cfg, err := ParseAppProbes(data)
		if err != nil {
			return
		}
		for path, p := range cfg {
			if err := p.validate(path); err != nil {
				t.Fatalf("accepted %q: %v", path, err)
			}
		}
	})
}
