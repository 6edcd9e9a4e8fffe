// Package oci writes minimal, reproducible OCI image-layout tarballs: one layer
// holding static binaries, a passwd entry for the non-root user, a writable /tmp
// and optionally the system roots. It is what a distroless static image provides,
// without needing a Docker engine or a registry.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image spec.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// File is a file copied into the image.
type File struct {
	Source string // path on this machine
	Path   string // absolute path in the image
	Mode   int64
}

// Spec describes the image to write.
type Spec struct {
	Name       string // fully qualified reference, e.g. localhost/podtls/sidecar:dev
	Files      []File
	Entrypoint []string
	Cmd        []string
	User       string // "uid:gid"
	Env        []string
}

// Descriptor points at a blob.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Index is index.json of the layout.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is an image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Config is the image configuration.
type Config struct {
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Config       ImageConfig `json:"config"`
	RootFS       RootFS      `json:"rootfs"`
}

// ImageConfig is the runtime part of Config.
type ImageConfig struct {
	User       string   `json:"User,omitempty"`
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

// RootFS lists the uncompressed layer digests.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// epoch keeps the output byte-for-byte reproducible.
var epoch = time.Unix(0, 0).UTC()

// Write writes the image-layout tarball of spec to w and returns the manifest digest.
func Write(w io.Writer, spec Spec) (string, error) {
	if err := validate(spec); err != nil {
		return "", err
	}
	layer, diffID, err := buildLayer(spec)
	if err != nil {
		return "", err
	}
	layerDesc := describe(MediaTypeLayer, layer)
	user := spec.User
	if user == "" {
		user = "65532:65532"
	}
	env := append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}, spec.Env...)
	cfg, err := json.Marshal(Config{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Config:       ImageConfig{User: user, Env: env, Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, WorkingDir: "/"},
		RootFS:       RootFS{Type: "layers", DiffIDs: []string{diffID}},
	})
	if err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	cfgDesc := describe(MediaTypeConfig, cfg)
	manifest, err := json.Marshal(Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfgDesc, Layers: []Descriptor{layerDesc}})
	if err != nil {
		return "", fmt.Errorf("encode manifest: %w", err)
	}
	manDesc := describe(MediaTypeManifest, manifest)
	manDesc.Annotations = map[string]string{
		// containerd names the imported image after this annotation.
		"io.containerd.image.name":          spec.Name,
		"org.opencontainers.image.ref.name": tagOf(spec.Name),
	}
	index, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{manDesc}})
	if err != nil {
		return "", fmt.Errorf("encode index: %w", err)
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(manDesc.Digest), manifest},
		{blobPath(cfgDesc.Digest), cfg},
		{blobPath(layerDesc.Digest), layer},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return "", fmt.Errorf("write %s: %w", dir, err)
		}
	}
	for _, e := range entries {
		if err := writeFile(tw, e.name, e.data, 0o644); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", fmt.Errorf("finish tarball: %w", err)
	}
	return manDesc.Digest, nil
}

func validate(spec Spec) error {
	if !strings.Contains(strings.Split(spec.Name, "/")[0], ".") && !strings.HasPrefix(spec.Name, "localhost/") {
		// containerd would normalise a short name to docker.io and try to pull it.
		return fmt.Errorf("image name %q: use a fully qualified name such as localhost/podtls/NAME:TAG", spec.Name)
	}
	if len(spec.Files) == 0 {
		return fmt.Errorf("image %s: no files", spec.Name)
	}
	for _, f := range spec.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return fmt.Errorf("image path %q: must be absolute and clean", f.Path)
		}
	}
	return nil
}

// buildLayer returns the gzip'd layer and the digest of its uncompressed tar.
func buildLayer(spec Spec) ([]byte, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	uid, gid := 65532, 65532
	if spec.User != "" {
		if _, err := fmt.Sscanf(spec.User, "%d:%d", &uid, &gid); err != nil {
			return nil, "", fmt.Errorf("user %q: want UID:GID: %w", spec.User, err)
		}
	}
	dirs := map[string]int64{"etc/": 0o755, "tmp/": 0o1777}
	for _, f := range spec.Files {
		for d := path.Dir(strings.TrimPrefix(f.Path, "/")); d != "." && d != ""; d = path.Dir(d) {
			if _, ok := dirs[d+"/"]; !ok {
				dirs[d+"/"] = 0o755
			}
		}
	}
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: dirs[d], ModTime: epoch}); err != nil {
			return nil, "", fmt.Errorf("layer dir %s: %w", d, err)
		}
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", gid)
	if err := writeFile(tw, "etc/passwd", []byte(passwd), 0o644); err != nil {
		return nil, "", err
	}
	if err := writeFile(tw, "etc/group", []byte(group), 0o644); err != nil {
		return nil, "", err
	}
	for _, f := range spec.Files {
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, "", fmt.Errorf("read %s: %w", f.Source, err)
		}
		if err := writeFile(tw, strings.TrimPrefix(f.Path, "/"), data, f.Mode); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("finish layer: %w", err)
	}
	diff := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return nil, "", fmt.Errorf("gzip: %w", err)
	}
	zw.ModTime = epoch
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("gzip layer: %w", err)
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(diff[:]), nil
}

func writeFile(tw *tar.Writer, name string, data []byte, mode int64) error {
	if mode == 0 {
		mode = 0o644
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return fmt.Errorf("tar header %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("tar write %s: %w", name, err)
	}
	return nil
}

func describe(mediaType string, data []byte) Descriptor {
	sum := sha256.Sum256(data)
	return Descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

// tagOf returns the tag of a reference, "latest" when it has none.
func tagOf(ref string) string {
	last := ref[strings.LastIndex(ref, "/")+1:]
	if _, tag, ok := strings.Cut(last, ":"); ok {
		return tag
	}
	return "latest"
}

// SystemRoots is where Debian (and the distroless base of the Dockerfiles) keep the
// system trust store; images carry it at the same path.
const SystemRoots = "/etc/ssl/certs/ca-certificates.crt"

// NonRoot is the user the images run as, distroless's "nonroot".
const NonRoot = "65532:65532"

// BinarySpec is the spec of an image around one static binary, the way the Dockerfiles
// build them: the binary at /<its base name> as entrypoint, running as NonRoot, with the
// system roots of this machine at SystemRoots when roots is not empty.
func BinarySpec(name, bin, roots string) Spec {
	base := filepath.Base(bin)
	spec := Spec{
		Name:       name,
		Files:      []File{{Source: bin, Path: "/" + base, Mode: 0o755}},
		Entrypoint: []string{"/" + base},
		User:       NonRoot,
	}
	if roots != "" {
		spec.Files = append(spec.Files, File{Source: roots, Path: SystemRoots, Mode: 0o644})
	}
	return spec
}

// WriteFile writes the image of spec to the file path and returns the manifest digest;
// on error it leaves no partial file behind.
func WriteFile(path string, spec Spec) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	digest, err := Write(f, spec)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", path, cerr)
	}
	if err != nil {
		os.Remove(path)
		return "", err
	}
	return digest, nil
}
