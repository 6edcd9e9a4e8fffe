package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one server process the benchmark started (nginx, a sidecar).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process exited
	err  error         // exit status, valid after done
}

// startProc runs args (already prefixed with the CPU pin) in its own process
// group, output to a log file in dir.
func startProc(dir, name string, args []string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: stop() reaches anything the server forks. Pdeathsig:
	// the server dies with us even if we are killed before our cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if it lingers.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// logTail returns the end of the process log for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const keep = 3000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// waitReady polls check until it succeeds, the process exits or timeout passes.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before it was ready:\n%s", p.name, p.err, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w\n%s", p.name, timeout, err, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tcpReady(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

func httpReady(url string) func() error {
	client := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	}
}

// freePort asks the kernel for an unused loopback port. Another process could
// take it before we bind it; on this single-user bench that risk is accepted.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// mem is what /proc/PID/status says about resident memory, in kB.
type mem struct {
	RSS  int64 // VmRSS: anonymous + file-backed (binary text, libraries) + shmem
	Anon int64 // RssAnon: heap, stacks, GC metadata
}

func (m mem) add(o mem) mem { return mem{RSS: m.RSS + o.RSS, Anon: m.Anon + o.Anon} }

// rssKB reads the resident memory of one process from /proc.
func rssKB(pid int) (mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, fmt.Errorf("rss of %d: %w", pid, err)
	}
	m, err := parseStatusMem(string(b))
	if err != nil {
		return mem{}, fmt.Errorf("rss of %d: %w", pid, err)
	}
	return m, nil
}

func parseStatusMem(status string) (mem, error) {
	var m mem
	found := 0
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != "VmRSS" && key != "RssAnon" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return mem{}, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb
		} else {
			m.Anon = kb
		}
		found++
	}
	if found != 2 {
		return mem{}, errors.New("no VmRSS or RssAnon line")
	}
	return m, nil
}

// children lists the PIDs whose parent is pid (nginx workers of a master).
func children(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var kids []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue // exited meanwhile
		}
		if ppid, ok := parentFromStat(string(b)); ok && ppid == pid {
			kids = append(kids, n)
		}
	}
	return kids, nil
}

// parentFromStat reads field 4 of /proc/PID/stat; the command name (field 2)
// may contain spaces and parentheses, so parsing starts after its last ')'.
func parentFromStat(stat string) (int, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// treeRSSKB is the memory of pid plus its direct children (nginx workers).
func treeRSSKB(pid int) (mem, error) {
	total, err := rssKB(pid)
	if err != nil {
		return mem{}, err
	}
	kids, err := children(pid)
	if err != nil {
		return mem{}, err
	}
	if len(kids) == 0 {
		return mem{}, errors.New("no worker process found")
	}
	for _, k := range kids {
		m, err := rssKB(k)
		if err != nil {
			return mem{}, err
		}
		total = total.add(m)
	}
	return total, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuFromStat reads utime+stime (fields 14 and 15) of /proc/PID/stat, in ticks.
func cpuFromStat(stat string) (int64, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return u + s, true
}

// cpuOwner is a server process whose CPU time the benchmark accounts.
type cpuOwner struct {
	pid  int
	tree bool // add the direct children (nginx workers)
}

// cpuSeconds is the CPU time (user+system, all threads) the owners have used.
func cpuSeconds(owners []cpuOwner) (float64, error) {
	var ticks int64
	for _, o := range owners {
		pids := []int{o.pid}
		if o.tree {
			kids, err := children(o.pid)
			if err != nil {
				return 0, err
			}
			pids = append(pids, kids...)
		}
		for _, pid := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				return 0, fmt.Errorf("cpu of %d: %w", pid, err)
			}
			t, ok := cpuFromStat(string(b))
			if !ok {
				return 0, fmt.Errorf("cpu of %d: unreadable stat", pid)
			}
			ticks += t
		}
	}
	return float64(ticks) / clockTicks, nil
}
