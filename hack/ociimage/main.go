// Command ociimage writes a single-layer OCI image-layout tarball around static
// binaries, the way the Dockerfiles describe the images, for machines without a
// Docker engine. The tarball imports with `ctr -n k8s.io images import`.
//
//	go run ./hack/ociimage -name localhost/podtls/sidecar:dev \
//	    -file bin/podtls-sidecar=/podtls-sidecar -entrypoint /podtls-sidecar \
//	    -out bin/images/sidecar.tar
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/podtls/podtls/hack/ociimage/oci"
)

type fileFlags []oci.File

func (f *fileFlags) String() string { return fmt.Sprint(*f) }

func (f *fileFlags) Set(v string) error {
	src, dst, ok := strings.Cut(v, "=")
	if !ok || src == "" || !strings.HasPrefix(dst, "/") {
		return fmt.Errorf("want SRC=/ABSOLUTE/DEST, got %q", v)
	}
	*f = append(*f, oci.File{Source: src, Path: dst, Mode: 0o755})
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		files      fileFlags
		name       = fs.String("name", "", "fully qualified image reference, e.g. localhost/podtls/sidecar:dev")
		out        = fs.String("out", "", "output tarball")
		entrypoint = fs.String("entrypoint", "", "entrypoint, space separated")
		user       = fs.String("user", oci.NonRoot, "user:group the image runs as")
		caCerts    = fs.String("ca-certificates", oci.SystemRoots, "system roots to ship at "+oci.SystemRoots+" (empty: none)")
	)
	fs.Var(&files, "file", "SRC=/DEST: put a file into the image, executable (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *out == "" || len(files) == 0 {
		return fmt.Errorf("-name, -out and at least one -file are required")
	}
	spec := oci.Spec{
		Name:       *name,
		Files:      files,
		Entrypoint: strings.Fields(*entrypoint),
		User:       *user,
	}
	if *caCerts != "" {
		spec.Files = append(spec.Files, oci.File{Source: *caCerts, Path: oci.SystemRoots, Mode: 0o644})
	}
	digest, err := oci.WriteFile(*out, spec)
	if err != nil {
		return err
	}
	slog.Info("image written", "name", *name, "out", *out, "manifest", digest)
	return nil
}
