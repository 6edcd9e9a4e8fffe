package acmetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// process is one server child: in its own process group (so a stop reaches
// everything it started), killed by the kernel if this process dies, its
// output appended to a log file in Dir.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	err     error         // exit status; valid after done
}

func (e *Env) startProcess(name, logName string, env []string, bin string, args ...string) (*process, error) {
	logPath := e.path(logName)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("acmetest: %s log: %w", name, err)
	}
	fmt.Fprintf(f, "==== %s starting %s\n", time.Now().UTC().Format(time.RFC3339Nano), name)
	// The process lives until stop, not until the caller's context ends.
	cmd := e.opts.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("acmetest: start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the process group: SIGTERM, then SIGKILL after 5 s.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Stragglers of the group (none expected) must not outlive the stop.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// exited reports an error if the process has already ended.
func (p *process) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("%s exited", p.name)
		}
		return fmt.Errorf("%s exited: %w", p.name, p.err)
	default:
		return nil
	}
}

// tail returns the last n lines of the process log, for error messages.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	// Only the output of the current run.
	if i := bytes.LastIndex(b, []byte("==== ")); i >= 0 {
		b = b[i:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls check every 25 ms until it succeeds, the process exits, or
// the timeout passes; errors carry the tail of the log.
func (e *Env) waitReady(ctx context.Context, p *process, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.ReadyTimeout)
	defer cancel()
	start := time.Now()
	var last error
	for {
		if err := p.exited(); err != nil {
			return fmt.Errorf("acmetest: %w before it was ready; log %s:\n%s", err, p.logPath, p.tail(30))
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			e.log.Info("server ready", "server", p.name, "after", time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("acmetest: %s not ready after %s: %w; log %s:\n%s", p.name,
				time.Since(start).Round(time.Millisecond), errors.Join(last, ctx.Err()), p.logPath, p.tail(30))
		case <-p.done:
		case <-time.After(25 * time.Millisecond):
		}
	}
}
