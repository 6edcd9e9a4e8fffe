package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTestImage(t *testing.T, name string) ([]byte, string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	digest, err := Write(&buf, Spec{
		Name:       name,
		Files:      []File{{Source: bin, Path: "/usr/local/bin/app", Mode: 0o755}},
		Entrypoint: []string{"/usr/local/bin/app"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), digest
}

func readTar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = data
		if h.Name == "usr/local/bin/app" && h.Mode != 0o755 {
			t.Errorf("app mode %o, want 755", h.Mode)
		}
	}
}

func TestWriteLayout(t *testing.T) {
	img, manifestDigest := writeTestImage(t, "localhost/podtls/app:dev")
	files := readTar(t, bytes.NewReader(img))

	// Every blob's name is the digest of its content.
	for name, data := range files {
		if !strings.HasPrefix(name, "blobs/sha256/") || strings.HasSuffix(name, "/") {
			continue
		}
		sum := sha256.Sum256(data)
		if want := strings.TrimPrefix(name, "blobs/sha256/"); hex.EncodeToString(sum[:]) != want {
			t.Errorf("blob %s has digest %x", name, sum)
		}
	}
	var index Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != manifestDigest {
		t.Fatalf("index %+v, want one manifest %s", index, manifestDigest)
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "localhost/podtls/app:dev" {
		t.Errorf("image name annotation %q", got)
	}
	if got := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "dev" {
		t.Errorf("ref name annotation %q", got)
	}
	var m Manifest
	if err := json.Unmarshal(files[blobPath(manifestDigest)], &m); err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := json.Unmarshal(files[blobPath(m.Config.Digest)], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/usr/local/bin/app" || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg)
	}
	layer := files[blobPath(m.Layers[0].Digest)]
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != cfg.RootFS.DiffIDs[0] {
		t.Errorf("diff_id %s does not match the uncompressed layer", cfg.RootFS.DiffIDs[0])
	}
	layerFiles := readTar(t, bytes.NewReader(raw))
	if string(layerFiles["usr/local/bin/app"]) != "#!binary" {
		t.Errorf("binary missing from layer: %v", keys(layerFiles))
	}
	if !strings.Contains(string(layerFiles["etc/passwd"]), "nonroot:x:65532:65532") {
		t.Errorf("passwd lacks the nonroot user: %q", layerFiles["etc/passwd"])
	}
	if _, ok := layerFiles["tmp/"]; !ok {
		t.Errorf("no /tmp in layer")
	}
}

func TestWriteIsReproducible(t *testing.T) {
	a, da := writeTestImage(t, "localhost/podtls/app:dev")
	b, db := writeTestImage(t, "localhost/podtls/app:dev")
	if da != db || !bytes.Equal(a, b) {
		t.Fatalf("two writes differ: %s vs %s", da, db)
	}
}

func TestWriteRejects(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"short name", Spec{Name: "podtls/app:dev", Files: []File{{Source: "x", Path: "/x"}}}, "fully qualified"},
		{"no files", Spec{Name: "localhost/app:dev"}, "no files"},
		{"relative path", Spec{Name: "localhost/app:dev", Files: []File{{Source: "x", Path: "x"}}}, "absolute"},
		{"unclean path", Spec{Name: "localhost/app:dev", Files: []File{{Source: "x", Path: "/a/../x"}}}, "absolute"},
		{"missing source", Spec{Name: "localhost/app:dev", Files: []File{{Source: filepath.Join(t.TempDir(), "nope"), Path: "/x"}}}, "read"},
		{"bad user", Spec{Name: "localhost/app:dev", User: "nobody", Files: []File{{Source: "x", Path: "/x"}}}, "UID:GID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Write(io.Discard, tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func TestTagOf(t *testing.T) {
	for ref, want := range map[string]string{"localhost/a/b:dev": "dev", "localhost:5000/a/b": "latest", "localhost:5000/a/b:v1": "v1"} {
		if got := tagOf(ref); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", ref, got, want)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
