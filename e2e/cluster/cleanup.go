package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	netnsPrefix = "podtls-e2e-"
	netnsDir    = "/run/netns"
	cgroupFS    = "/sys/fs/cgroup"
	// containerLogLinks is where the kubelet always links container logs, whatever its
	// root dir; links into a run's directory are removed with it.
	containerLogLinks = "/var/log/containers"
	// cniCacheDir is libcni's result cache, fixed in containerd 1.6.
	cniCacheDir = "/var/lib/cni/results"
	// shimSocketDir is where containerd 1.6 shims listen, whatever containerd's state dir.
	shimSocketDir = "/run/containerd/s"
)

// Leftovers lists what a cluster run may leave on the machine and is still there: processes
// started from a run directory under base, mounts under base, cgroups under the node's
// cgroup root, podtls-e2e-* network namespaces, pod network CNI cache entries. Empty after
// a clean Down.
func Leftovers(base string) []string {
	var out []string
	for _, pid := range procsMatching(base, nil, cgroupDirs()) {
		out = append(out, fmt.Sprintf("process %d (%s)", pid, cmdline(pid)))
	}
	for _, m := range mountsUnder(base) {
		out = append(out, "mount "+m)
	}
	for _, cg := range cgroupDirs() {
		out = append(out, "cgroup "+cg)
	}
	for _, ns := range staleNetns() {
		out = append(out, "netns "+ns)
	}
	// Pod network results are named after the node's CNI network, so they are ours.
	cache, _ := os.ReadDir(cniCacheDir)
	for _, e := range cache {
		if strings.HasPrefix(e.Name(), cniNetwork+"-") {
			out = append(out, "CNI cache "+filepath.Join(cniCacheDir, e.Name()))
		}
	}
	return out
}

// cleanRun removes everything run id (in directory dir) left behind, whether it crashed
// or was stopped: processes, mounts, cgroups, its network namespaces, CNI cache entries,
// log links and its directory. The caller holds the base lock, so no live cluster owns any
// of it.
func cleanRun(dir, id string, logf func(string, ...any)) error {
	var errs []error
	namespaces := runNetns(id)
	inodes := map[string]bool{}
	for _, ns := range namespaces {
		if ino := inode(filepath.Join(netnsDir, ns)); ino != "" {
			inodes[ino] = true
		}
	}
	if err := killAll(func() []int { return procsMatching(dir, inodes, cgroupDirs()) }); err != nil {
		errs = append(errs, err)
	}
	for _, m := range mountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range namespaces {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns delete %s: %w: %s", ns, err, bytes.TrimSpace(out)))
		}
	}
	removeLinksInto(containerLogLinks, dir)
	removeContainerdLeftovers(dir)
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	if len(errs) == 0 {
		logf("cleaned %s", dir)
	}
	return errors.Join(errs...)
}

// runNetns lists the network namespaces of run id: the first node's (podtls-e2e-ID), the
// other nodes' and the LAN's (podtls-e2e-ID-*).
func runNetns(id string) []string {
	var out []string
	for _, ns := range staleNetns() {
		if ns == netnsPrefix+id || strings.HasPrefix(ns, netnsPrefix+id+"-") {
			out = append(out, ns)
		}
	}
	return out
}

// runOfNetns is the run ID a podtls-e2e-* namespace belongs to.
func runOfNetns(ns string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(ns, netnsPrefix), "-")
	return id
}

// cleanStale removes every earlier run under base and every podtls-e2e-* namespace.
func cleanStale(base string, logf func(string, ...any)) error {
	var errs []error
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", base, err)
	}
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), "run-")
		if !ok || !e.IsDir() {
			continue
		}
		logf("cleaning stale run %s", id)
		if err := cleanRun(filepath.Join(base, e.Name()), id, logf); err != nil {
			errs = append(errs, err)
		}
	}
	// Namespaces whose run directory is gone, and cgroups of a run killed mid-way.
	for _, ns := range staleNetns() {
		id := runOfNetns(ns)
		if err := cleanRun(filepath.Join(base, "run-"+id), id, logf); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	pruneOldLogs(filepath.Join(base, "logs"), 24*time.Hour)
	return errors.Join(errs...)
}

// procsMatching returns the PIDs whose command line mentions dir, that live in one of the
// network namespaces with inodes netns, or that sit in one of cgroups.
func procsMatching(dir string, netns map[string]bool, cgroups []string) []int {
	seen := map[int]bool{}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if dir != "" && strings.Contains(cmdline(pid), dir+"/") {
			seen[pid] = true
			continue
		}
		if len(netns) > 0 && netns[inode(fmt.Sprintf("/proc/%d/ns/net", pid))] {
			seen[pid] = true
		}
	}
	for _, cg := range cgroups {
		data, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != self {
				seen[pid] = true
			}
		}
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// killAll SIGKILLs what list returns until it returns nothing (shims may start new
// processes while being killed), for at most 15 s.
func killAll(list func() []int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := list()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes survive SIGKILL: %v", pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cmdline(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " "))
}

func inode(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseMountsUnder(bufio.NewScanner(f), dir)
}

// parseMountsUnder reads mountinfo lines (proc(5)) and returns the mount points (field 5,
// octal escapes decoded) at or below dir, deepest first so each unmounts before its parent.
func parseMountsUnder(sc *bufio.Scanner, dir string) []string {
	var out []string
	dir = filepath.Clean(dir)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeOctal(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

// unescapeOctal decodes mountinfo's \NNN escapes (space, tab, newline, backslash).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupDirs lists the cluster's cgroups (the kubelets' shared cgroup root and below, in
// every hierarchy), deepest first.
func cgroupDirs() []string { return cgroupDirsUnder(cgroupRoot) }

// cgroupDirsUnder lists root (a cgroup path like /podtls-e2e) and its descendants in every
// hierarchy, deepest first.
func cgroupDirsUnder(root string) []string {
	var out []string
	hierarchies, _ := os.ReadDir(cgroupFS)
	roots := []string{filepath.Join(cgroupFS, root)}
	for _, h := range hierarchies {
		roots = append(roots, filepath.Join(cgroupFS, h.Name(), root))
	}
	for _, root := range roots {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, path)
			}
			return nil
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// removeCgroups rmdirs the node's cgroups, children first. A cgroup just emptied may stay
// busy for a moment, hence the retries.
func removeCgroups() error {
	var last error
	for attempt := 0; attempt < 50; attempt++ {
		last = nil
		for _, cg := range cgroupDirs() {
			if err := unix.Rmdir(cg); err != nil && !errors.Is(err, unix.ENOENT) {
				last = fmt.Errorf("remove cgroup %s: %w", cg, err)
			}
		}
		if last == nil && len(cgroupDirs()) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func staleNetns() []string {
	entries, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), netnsPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func removeLinksInto(linkDir, target string) {
	entries, _ := os.ReadDir(linkDir)
	for _, e := range entries {
		p := filepath.Join(linkDir, e.Name())
		if dest, err := os.Readlink(p); err == nil && strings.HasPrefix(dest, target+"/") {
			_ = os.Remove(p)
		}
	}
}

// removeContainerdLeftovers removes what containerd 1.6 keeps outside its configured
// directories for a run's sandboxes and containers: shim sockets in /run/containerd/s
// (each shim records its address in its bundle) and libcni's result cache entries
// (<network>-<sandbox id>-<interface>). Only entries named by the run's own state go.
func removeContainerdLeftovers(dir string) {
	bundles, _ := filepath.Glob(filepath.Join(dir, "nodes", "*", "containerd", "state", "io.containerd.runtime.v2.task", "*", "*"))
	sandboxes, _ := filepath.Glob(filepath.Join(dir, "nodes", "*", "containerd", "root", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
	for _, b := range bundles {
		if data, err := os.ReadFile(filepath.Join(b, "address")); err == nil {
			sock := strings.TrimPrefix(strings.TrimSpace(string(data)), "unix://")
			if filepath.Dir(sock) == shimSocketDir {
				_ = os.Remove(sock)
			}
		}
	}
	cache, _ := os.ReadDir(cniCacheDir)
	for _, id := range append(bundles, sandboxes...) {
		id = filepath.Base(id)
		for _, e := range cache {
			if strings.Contains(e.Name(), "-"+id+"-") {
				_ = os.Remove(filepath.Join(cniCacheDir, e.Name()))
			}
		}
	}
}

func pruneOldLogs(dir string, age time.Duration) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// createCgroupRoot makes a kubelet's cgroupRoot (a path below the shared cgroupRoot) in
// every mounted hierarchy, parents first (the kubelet refuses a root that does not exist).
// A new cpuset cgroup starts with no CPUs or memory nodes, so each inherits its parent's.
func createCgroupRoot(root string) error {
	hierarchies, err := os.ReadDir(cgroupFS)
	if err != nil {
		return fmt.Errorf("read %s: %w", cgroupFS, err)
	}
	bases := []string{cgroupFS}
	if _, err := os.Stat(filepath.Join(cgroupFS, "cgroup.controllers")); err != nil {
		bases = bases[:0] // not a pure cgroup v2 mount: one directory per hierarchy
		for _, h := range hierarchies {
			if _, err := os.Stat(filepath.Join(cgroupFS, h.Name(), "cgroup.procs")); err == nil {
				bases = append(bases, filepath.Join(cgroupFS, h.Name()))
			}
		}
	}
	var levels []string
	for p := filepath.Clean(root); p != "/" && p != "."; p = filepath.Dir(p) {
		levels = append([]string{p}, levels...)
	}
	for _, base := range bases {
		for _, level := range levels {
			dir := filepath.Join(base, level)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if cur, err := os.ReadFile(filepath.Join(dir, f)); err == nil && len(bytes.TrimSpace(cur)) > 0 {
					continue // already set (an existing parent)
				}
				if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
					return fmt.Errorf("inherit %s in %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}
