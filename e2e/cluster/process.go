package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// process is one component running inside the node's network namespace.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // exit error, valid after done
}

// start runs bin with args inside the first node's network namespace (see startIn).
func (c *Cluster) start(name, bin string, args ...string) (*process, error) {
	return c.startIn(c.netnsPath(), name, bin, args...)
}

// startIn runs bin with args inside the network namespace bound at netns (nsenter --net
// only: every component shares the machine's mount namespace, as kubelet and containerd
// must), logs to <logs>/<name>.log and records the PID in the run's pid file for crash
// recovery.
func (c *Cluster) startIn(netns, name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(c.paths.logs, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	argv := append([]string{"--net=" + netns, "--", bin}, args...)
	cmd := exec.Command("nsenter", argv...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = c.paths.run
	cmd.Env = append(os.Environ(), "PATH="+hostPath)
	// Own process group (a terminal's ^C reaches only the test, which then tears down in
	// order); SIGKILL when the test process dies, so a killed test leaves no control plane
	// running. Shims and containers outlive that; the next Up cleans them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	if err := appendPID(c.paths.pidFile, name, cmd.Process.Pid); err != nil {
		return p, err
	}
	c.procs = append(c.procs, p)
	c.byName[name] = p
	c.logf("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	return p, nil
}

// StartProcess runs an extra host process inside the node's network namespace (a DNS or
// ACME server for a test, say), with its log in LogDir()/<name>.log. Down stops it with
// SIGTERM after the pods and before the node and control plane; a crashed run's extra
// processes are killed by the next Up like every other component. Not safe for concurrent
// use.
func (c *Cluster) StartProcess(name, bin string, args ...string) error {
	if _, ok := c.byName[name]; ok {
		return fmt.Errorf("process %s already started", name)
	}
	if _, err := c.start(name, bin, args...); err != nil {
		return err
	}
	c.extra = append(c.extra, name)
	return nil
}

// exited reports whether p has exited, with its error.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs. Safe to call twice.
func (p *process) stop(grace time.Duration) {
	if done, _ := p.exited(); done {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// kill SIGKILLs p and waits for it to exit. Safe to call twice.
func (p *process) kill() {
	if done, _ := p.exited(); done {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// hostPath is the PATH components run with: containerd finds its shim and runc there.
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func appendPID(path, name string, pid int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("record pid of %s: %w", name, err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %d\n", name, pid); err != nil {
		return fmt.Errorf("record pid of %s: %w", name, err)
	}
	return nil
}
