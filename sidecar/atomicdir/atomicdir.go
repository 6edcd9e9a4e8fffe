// Package atomicdir replaces the files of a directory in one atomic step,
// the way kubelet updates Secret and ConfigMap volumes, so readers never
// see a new certificate beside an old key. The sidecar's agent writes its
// own certificate with it, and app-owned certificate files are written with
// it into the volume the app mounts.
package atomicdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is one file of an atomic update.
type File struct {
	Name string
	Data []byte
	Mode os.FileMode
}

// Write replaces files in dir as one atomic step, the way kubelet updates
// Secret volumes: the files are written and fsynced into a fresh "..podtls_*"
// directory, a "..data" symlink is switched to it with a single rename, and
// each visible name is a symlink "name -> ..data/name". A reader therefore
// sees either every old file or every new one, never a new certificate with
// an old key. The previous directory is removed afterwards.
func Write(dir string, files []File) error {
	tsDir, err := os.MkdirTemp(dir, "..podtls_")
	if err != nil {
		return fmt.Errorf("create staging dir in %s: %w", dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tsDir)
		}
	}()
	// Keep the set-group-ID bit the directory has (a volume with an fsGroup):
	// the files must get the pod's group, not the writer's.
	mode := os.FileMode(0o755)
	if st, err := os.Stat(dir); err == nil && st.Mode()&os.ModeSetgid != 0 {
		mode |= os.ModeSetgid
	}
	if err := os.Chmod(tsDir, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tsDir, err)
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(tsDir, f.Name), f.Data, f.Mode); err != nil {
			return err
		}
	}
	if err := syncDir(tsDir); err != nil {
		return err
	}
	dataLink := filepath.Join(dir, "..data")
	old, _ := os.Readlink(dataLink)
	if err := replaceSymlink(filepath.Base(tsDir), dataLink); err != nil {
		return err
	}
	ok = true
	for _, f := range files {
		target := filepath.Join("..data", f.Name)
		p := filepath.Join(dir, f.Name)
		if cur, err := os.Readlink(p); err == nil && cur == target {
			continue
		}
		// First run, or a plain file left by someone else: replace it by the link.
		if err := replaceSymlink(target, p); err != nil {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if old != "" && old != filepath.Base(tsDir) && filepath.Dir(filepath.Join(dir, old)) == filepath.Clean(dir) {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove previous %s: %w", old, err)
		}
	}
	return nil
}

func replaceSymlink(target, path string) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("symlink %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return os.Chmod(path, mode) // umask must not widen or narrow it
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
