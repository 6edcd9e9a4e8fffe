package kubetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// A reaper is a tiny /bin/sh process that outlives a dying test binary and then stops the
// control plane it started. envtest has no such protection: a test binary killed by
// `go test -timeout`, a panic or os.Exit never runs its cleanups, and etcd and
// kube-apiserver (in their own process groups) then run forever.
type reaper struct {
	cmd  *exec.Cmd
	pids []int
}

// reaperScript: $1 parent pid, $2 space-separated pids, the rest directories to remove.
// It ignores terminal signals (Ctrl-C reaches the test binary, which cleans up itself);
// Env.Stop ends it with SIGKILL.
const reaperScript = `trap '' INT TERM HUP
parent=$1; pids=$2; shift 2
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 10 ] && kill -0 $pids 2>/dev/null; do sleep 1; i=$((i+1)); done
kill -KILL $pids 2>/dev/null
rm -rf "$@"
`

// startReaper watches the control plane of te's processes, found as children of this process
// by their unique --data-dir / --cert-dir flags. Only on Linux (it reads /proc); elsewhere,
// and if the processes cannot be found, it returns nil and the caller goes on unprotected.
func startReaper(flags []string, dirs []string) (*reaper, error) {
	if runtime.GOOS != "linux" {
		return nil, nil
	}
	pids, err := childrenWithArg(os.Getpid(), flags)
	if err != nil {
		return nil, err
	}
	if len(pids) != len(flags) {
		return nil, fmt.Errorf("found %d of %d control-plane processes", len(pids), len(flags))
	}
	ids := make([]string, len(pids))
	for i, p := range pids {
		ids[i] = strconv.Itoa(p)
	}
	args := append([]string{"-c", reaperScript, "kubetest-reaper", strconv.Itoa(os.Getpid()), strings.Join(ids, " ")}, dirs...)
	cmd := exec.Command("/bin/sh", args...)
	// Own process group: a Ctrl-C to the test's group must not kill the reaper first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	return &reaper{cmd: cmd, pids: pids}, nil
}

// stop ends the reaper after a clean shutdown.
func (r *reaper) stop() {
	if r == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait() // "signal: killed" is the expected outcome
}

// childrenWithArg returns the pids of parent's children whose command line contains one of
// the given arguments, in the order of args.
func childrenWithArg(parent int, args []string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	found := make([]int, len(args))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := parentOf(pid); err != nil || ppid != parent {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // exited meanwhile
		}
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			for i, want := range args {
				if string(a) == want {
					found[i] = pid
				}
			}
		}
	}
	var pids []int
	for _, p := range found {
		if p != 0 {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// parentOf reads the parent pid from /proc/PID/stat ("pid (comm) state ppid ...", where comm
// may itself contain spaces and parentheses).
func parentOf(pid int) (int, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.Atoi(f[1])
}
