package kubetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
)

const reaperChildEnv = "KUBETEST_REAPER_CHILD"

// TestReaperStopsOrphanedControlPlane launches a control plane in a child test process that
// then exits without stopping it, as a test binary killed by `go test -timeout` does, and
// checks that etcd and kube-apiserver go away with their directories.
func TestReaperStopsOrphanedControlPlane(t *testing.T) {
	if os.Getenv(reaperChildEnv) == "1" {
		reaperChild()
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("the reaper reads /proc: Linux only")
	}
	if testing.Short() {
		t.Skip("needs a kube-apiserver; skipped in -short mode")
	}
	if _, err := AssetsDir(); err != nil {
		missingAssets(t, err)
	}

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestReaperStopsOrphanedControlPlane$", "-test.count=1")
	cmd.Env = append(os.Environ(), reaperChildEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s%s", err, out, stderr.String())
	}
	var pids []int
	var dirs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "PID" {
			p, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("child printed %q: %v", sc.Text(), err)
			}
			pids = append(pids, p)
		}
		if len(f) == 2 && f[0] == "DIR" {
			dirs = append(dirs, f[1])
		}
	}
	if len(pids) != 2 || len(dirs) == 0 {
		t.Fatalf("child reported pids %v dirs %v, want etcd and kube-apiserver; output:\n%s%s", pids, dirs, out, stderr.String())
	}

	var alive []int
	t.Cleanup(func() {
		for _, p := range alive {
			_ = syscall.Kill(p, syscall.SIGKILL) // don't leak them from this test either
		}
	})
	poll.Eventually(t, 45*time.Second, "the orphaned control plane to be reaped", func() (bool, string) {
		alive = nil
		for _, p := range pids {
			if running(p) {
				alive = append(alive, p)
			}
		}
		var left []string
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				left = append(left, d)
			}
		}
		return len(alive) == 0 && len(left) == 0, fmt.Sprintf("processes %v, directories %v left", alive, left)
	})
}

// reaperChild launches a control plane, reports it, and exits without Stop.
func reaperChild() {
	env, err := Launch()
	if err != nil {
		fmt.Fprintln(os.Stderr, "launch:", err)
		os.Exit(2)
	}
	if env.reaper == nil {
		fmt.Fprintln(os.Stderr, "no reaper")
		os.Exit(3)
	}
	for _, p := range env.reaper.pids {
		fmt.Printf("PID %d\n", p)
	}
	for _, d := range []string{env.env.ControlPlane.Etcd.DataDir, env.env.ControlPlane.APIServer.CertDir, env.tmpDir} {
		fmt.Printf("DIR %s\n", d)
	}
	os.Exit(0)
}

// running reports whether pid exists and is not a zombie (a container's init may never reap
// the orphans it inherits).
func running(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z"))
}

func TestParentOf(t *testing.T) {
	ppid, err := parentOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ppid != os.Getppid() {
		t.Errorf("parentOf(self) = %d, want %d", ppid, os.Getppid())
	}
	if _, err := parentOf(-1); err == nil {
		t.Error("parentOf(-1) succeeded")
	}
}
