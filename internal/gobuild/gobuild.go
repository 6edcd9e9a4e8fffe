// Package gobuild builds podtls binaries the one way every build of the project
// does: static (CGO_ENABLED=0), -trimpath, stripped. `make build`, the
// Dockerfiles, `go vet` in `make lint`, the images of the local cluster, the
// demo and the tests that run real binaries all use these flags, so a package
// compiled for one of them sits in the Go build cache for all the others (a
// CLI built without -trimpath once recompiled all of client-go in the middle
// of the demo).
package gobuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// flags are the go build flags of every podtls binary (the Makefile spells
// the same ones; its build stamps a version on top with -X, which changes
// only the link).
var flags = []string{"-trimpath", "-ldflags=-s -w"}

// env is the environment of every podtls build: static binaries.
const env = "CGO_ENABLED=0"

// Binaries compiles the main packages pkgs (import paths, or paths relative
// to dir's module root repoRoot) into outDir with one go build: the go command
// loads the packages once and runs their compiles and links side by side.
// Each binary is named after the last element of its package path.
func Binaries(ctx context.Context, repoRoot, outDir string, pkgs ...string) error {
	if len(pkgs) == 0 {
		return nil
	}
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", outDir+string(filepath.Separator))
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", strings.Join(pkgs, " "), err, tail(out, 2000))
	}
	return nil
}

// Binary builds the one main package pkg into outDir and returns the path of
// the binary.
func Binary(ctx context.Context, repoRoot, outDir, pkg string) (string, error) {
	if err := Binaries(ctx, repoRoot, outDir, pkg); err != nil {
		return "", err
	}
	return filepath.Join(outDir, filepath.Base(pkg)), nil
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// Module is the import path of the podtls module.
const Module = "github.com/podtls/podtls"

// RepoRoot finds the podtls checkout from the working directory upwards (a
// package directory under `go test`): the first directory whose go.mod
// declares Module. Nested modules (hack/tools/pebble) are skipped.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module "+Module+"\n") {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod of %s in %s or any parent directory: run from inside the podtls repository", Module, wd)
		}
	}
}
