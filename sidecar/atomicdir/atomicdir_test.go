package atomicdir

import (
	"os"
	"path/filepath"
	"syscall"
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

// TestWriteKeepsTheVolumesGroup: in a set-group-ID directory (kubelet's
// emptyDir with an fsGroup) the files get the directory's group, so the
// app containers (members of the fsGroup) can read 0640 files.
func TestWriteKeepsTheVolumesGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory another group")
	}
	const fsGroup = 4242
	dir := t.TempDir()
	if err := os.Chown(dir, -1, fsGroup); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o775|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, []File{{Name: "tls.key", Data: []byte("k"), Mode: 0o640}}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	if gid := st.Sys().(*syscall.Stat_t).Gid; gid != fsGroup || st.Mode().Perm() != 0o640 {
		t.Fatalf("tls.key group %d mode %v; want %d, 0640", gid, st.Mode().Perm(), fsGroup)
	}
}
