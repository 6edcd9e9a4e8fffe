package appcerts

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/podtls/podtls/contract"
)

// Reloader tells the app that its files changed.
type Reloader interface {
	Action() string
	Reload(ctx context.Context) error
}

// NewReloader returns the sidecar's side of r: nil for none and restart
// (the controller restarts workloads).
func NewReloader(r contract.Reload) Reloader {
	switch r.Action {
	case contract.ReloadSignal:
		return &Signaler{Signal: signalNumber(r.Signal), Name: r.Signal, Process: r.Process, Proc: "/proc", Self: os.Getpid()}
	case contract.ReloadHTTP:
		return &Poster{URL: fmt.Sprintf("http://localhost:%d%s", r.Port, r.Path), Client: http.DefaultClient}
	}
	return nil
}

func signalNumber(name string) syscall.Signal {
	switch name {
	case "SIGUSR1":
		return syscall.SIGUSR1
	case "SIGUSR2":
		return syscall.SIGUSR2
	case "SIGINT":
		return syscall.SIGINT
	case "SIGQUIT":
		return syscall.SIGQUIT
	case "SIGTERM":
		return syscall.SIGTERM
	case "SIGWINCH":
		return syscall.SIGWINCH
	}
	return syscall.SIGHUP
}

// Signaler sends a signal to the main process of every other container of
// the pod (the processes of the shared PID namespace whose parent is
// outside it), or to those whose command name is Process.
type Signaler struct {
	Signal  syscall.Signal
	Name    string
	Process string
	Proc    string // mount point of procfs
	Self    int
	// Kill sends the signal; nil: syscall.Kill.
	Kill func(pid int, sig syscall.Signal) error
}

// Action implements Reloader.
func (s *Signaler) Action() string { return contract.ReloadSignal }

// Reload implements Reloader.
func (s *Signaler) Reload(context.Context) error {
	pids, err := s.Targets()
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		if s.Process != "" {
			return fmt.Errorf("%s: no container's main process is named %q", s.Name, s.Process)
		}
		return fmt.Errorf("%s: no other container's process is visible (the pod needs shareProcessNamespace: true)", s.Name)
	}
	kill := s.Kill
	if kill == nil {
		kill = syscall.Kill
	}
	var errs []error
	for _, p := range pids {
		if err := kill(p.PID, s.Signal); err != nil {
			if errors.Is(err, syscall.EPERM) {
				err = fmt.Errorf("%w: the process runs as another user than the sidecar", err)
			}
			errs = append(errs, fmt.Errorf("%s to pid %d (%s): %w", s.Name, p.PID, p.Comm, err))
		}
	}
	return errors.Join(errs...)
}

// Process is one process of the pod.
type Process struct {
	PID  int
	Comm string
}

// Targets lists the processes the signal goes to: parent outside the
// namespace (PPid 0), not PID 1 (the pod's pause process) and not the
// sidecar itself.
func (s *Signaler) Targets() ([]Process, error) {
	entries, err := os.ReadDir(s.Proc)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == s.Self {
			continue
		}
		f, err := os.Open(filepath.Join(s.Proc, e.Name(), "status"))
		if err != nil {
			continue // exited meanwhile
		}
		comm, ppid := parseStatus(f)
		f.Close()
		if ppid != 0 || (s.Process != "" && comm != s.Process) {
			continue
		}
		out = append(out, Process{PID: pid, Comm: comm})
	}
	return out, nil
}

// parseStatus reads Name and PPid from /proc/PID/status; ppid is -1 when
// absent.
func parseStatus(r io.Reader) (comm string, ppid int) {
	ppid = -1
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			comm = v
		case "PPid":
			if n, err := strconv.Atoi(v); err == nil {
				ppid = n
			}
		}
	}
	return comm, ppid
}

// Poster POSTs to the app's local reload endpoint; any 2xx is success.
type Poster struct {
	URL    string
	Client *http.Client
}

// Action implements Reloader.
func (p *Poster) Action() string { return contract.ReloadHTTP }

// Reload implements Reloader.
func (p *Poster) Reload(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, nil)
	if err != nil {
		return fmt.Errorf("POST %s: %w", p.URL, err)
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", p.URL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", p.URL, resp.Status)
	}
	return nil
}
