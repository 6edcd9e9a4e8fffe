package gobuild

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBinariesAreStaticAndTrimmed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, err := Binary(t.Context(), root, dir, "./hack/ociimage")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	info := string(out)
	for _, want := range []string{"-trimpath=true", "CGO_ENABLED=0"} {
		if !strings.Contains(info, want) {
			t.Errorf("binary lacks build setting %s:\n%s", want, info)
		}
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: not stripped (-s)")
	}
}

func TestBinariesReportsCompileErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	mod := t.TempDir()
	for name, body := range map[string]string{
		"go.mod":  "module example.invalid/broken\n\ngo 1.24\n",
		"main.go": "package main\n\nfunc main() { undefined() }\n",
	} {
		if err := os.WriteFile(filepath.Join(mod, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := Binaries(t.Context(), mod, t.TempDir(), ".")
	if err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("got %v, want the compiler's error", err)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "gobuild", "gobuild.go")); err != nil {
		t.Errorf("RepoRoot() = %s, which does not hold this package: %v", root, err)
	}
	t.Chdir(filepath.Join(root, "hack", "tools", "pebble")) // a nested module
	if got, err := RepoRoot(); err != nil || got != root {
		t.Errorf("from a nested module: RepoRoot() = %q, %v; want %s", got, err, root)
	}
	t.Chdir(t.TempDir())
	if _, err := RepoRoot(); err == nil {
		t.Error("outside the repository: no error")
	}
}
