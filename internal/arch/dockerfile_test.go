package arch

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerfilesCopyEveryPackage: the Dockerfiles copy only the directories
// their binary is built from (so unrelated edits keep the build cache), and
// nothing here runs Docker: a package moved or added without its COPY line
// would break `docker build` unnoticed.
func TestDockerfilesCopyEveryPackage(t *testing.T) {
	for file, main := range map[string]string{
		"Dockerfile.sidecar": "./sidecar/cmd/podtls-sidecar",
		"Dockerfile.webhook": "./controller/cmd/podtls-controller",
	} {
		t.Run(file, func(t *testing.T) {
			copied := dockerCopies(t, filepath.Join("..", "..", file))
			for _, dep := range goListDeps(t, module+"/"+strings.TrimPrefix(main, "./")) {
				rel, ok := strings.CutPrefix(dep, module+"/")
				if !ok {
					continue
				}
				found := false
				for _, dir := range copied {
					if rel == dir || strings.HasPrefix(rel, dir+"/") {
						found = true
					}
				}
				if !found {
					t.Errorf("%s builds %s from %s, which no COPY line brings in", file, main, rel)
				}
			}
		})
	}
}

// dockerCopies returns the source directories of the COPY lines of a
// Dockerfile's build stage (COPY --from=... lines are skipped).
func dockerCopies(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != "COPY" || strings.HasPrefix(fields[1], "--") {
			continue
		}
		dirs = append(dirs, fields[1:len(fields)-1]...)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return dirs
}
