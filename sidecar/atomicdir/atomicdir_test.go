package atomicdir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesPlainFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"one", "two"} {
		if err := Write(dir, []File{{Name: "tls.crt", Data: []byte(v), Mode: 0o644}, {Name: "tls.key", Data: []byte(v), Mode: 0o600}}); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"tls.crt", "tls.key"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil || string(b) != v {
				t.Fatalf("%s = %q, %v; want %q", f, b, err, v)
			}
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "tls.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
}
