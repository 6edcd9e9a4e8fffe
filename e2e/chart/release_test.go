package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

// previousRelease is the commit of podtls's previous release, chart and images 0.1.0: the
// last commit of phase 1. TestUpgradeOnNode installs it and upgrades to this checkout.
const previousRelease = "e5774e9176a9ce2d51143c5667e89aef10312399"

// release is the source of a podtls release, extracted from git, and its images.
type release struct {
	dir        string // the extracted tree: its own go.mod, charts/podtls
	controller string // image references
	sidecar    string
}

// chart is the release's chart directory.
func (r release) chart() string { return filepath.Join(r.dir, "charts", "podtls") }

// extractRelease writes the tree of commit into a temporary directory with git archive.
// It skips the test in a shallow clone (the commit is not there to be had) and fails it
// when a full clone lacks the commit.
func extractRelease(t *testing.T, root, commit string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "git", "-C", root, "rev-parse", "--is-shallow-repository").CombinedOutput()
	if err != nil {
		t.Fatalf("git rev-parse --is-shallow-repository: %v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) == "true" {
		t.Skipf("shallow clone: the previous release %s is not in its history; upgrading from it needs the full history (git fetch --unshallow)", commit)
	}
	if out, err := exec.CommandContext(t.Context(), "git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("the previous release %s is missing from this full clone: %v: %s", commit, err, out)
	}
	dir := t.TempDir()
	archive := exec.CommandContext(t.Context(), "git", "-C", root, "archive", commit)
	untar := exec.CommandContext(t.Context(), "tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	var archiveErr, untarErr bytes.Buffer
	archive.Stderr, untar.Stderr = &archiveErr, &untarErr
	if err := archive.Start(); err != nil {
		t.Fatalf("git archive %s: %v", commit, err)
	}
	if err := untar.Run(); err != nil {
		_ = archive.Wait()
		t.Fatalf("tar -x of git archive %s: %v: %s", commit, err, untarErr.String())
	}
	if err := archive.Wait(); err != nil {
		t.Fatalf("git archive %s: %v: %s", commit, err, archiveErr.String())
	}
	return dir
}

// buildRelease builds the controller and the sidecar (main packages controllerPkg and
// sidecarPkg) of the podtls tree dir, in its own module with its own dependencies, the way
// podtls builds them (internal/gobuild), and packs them into outDir as images of the
// usual repositories tagged tag. It returns the release and the two image tarballs.
func buildRelease(ctx context.Context, dir, tag, outDir, controllerPkg, sidecarPkg string) (release, []string, error) {
	bins, err := os.MkdirTemp("", "podtls-release-bin-")
	if err != nil {
		return release{}, nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(bins)
	if err := gobuild.Binaries(ctx, dir, bins, controllerPkg, sidecarPkg); err != nil {
		return release{}, nil, fmt.Errorf("build release %s: %w", tag, err)
	}
	r := release{dir: dir, controller: controllerRepo + ":" + tag, sidecar: sidecarRepo + ":" + tag}
	var tarballs []string
	for _, img := range []struct{ pkg, name string }{{controllerPkg, r.controller}, {sidecarPkg, r.sidecar}} {
		out := filepath.Join(outDir, filepath.Base(img.pkg)+"-"+tag+".tar")
		if err := cluster.PackImage(filepath.Join(bins, filepath.Base(img.pkg)), img.name, out); err != nil {
			return release{}, nil, err
		}
		tarballs = append(tarballs, out)
	}
	return r, tarballs, nil
}
