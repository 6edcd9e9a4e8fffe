package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podtls/podtls/bench/pki"
	"github.com/podtls/podtls/bench/stats"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/gobuild"
)

// MemoryConfig configures the memory model: one real podtls-sidecar (inbound
// mTLS, tcp mode) in front of an in-process echo backend, held open
// connections from in-process mTLS clients, resident memory read from /proc.
type MemoryConfig struct {
	RepoRoot string
	Sidecar  string // prebuilt podtls-sidecar; empty: build it
	Steps    []int  // connection counts, ascending, each > 0
	Runs     int    // fresh sidecar per run and phase; the report shows medians
	// Active is how long every open connection transfers at each step of the
	// active phase (16 KiB echoed back and forth in a loop).
	Active     time.Duration
	JSONOutput string
	Out        io.Writer
}

// MemoryResult is the measured model. RSS values are VmRSS in kB.
type MemoryResult struct {
	Steps []int `json:"steps"`
	// StartKB: each run's RSS before the first connection (idle runs).
	StartKB []float64 `json:"startKB"`
	// IdleKB[i][run]: RSS with Steps[i] connections open, idle, after one
	// round trip each. ActiveKB[i][run]: peak RSS (VmHWM) while Steps[i]
	// connections transfer.
	IdleKB   [][]float64 `json:"idleKB"`
	ActiveKB [][]float64 `json:"activeKB"`
}

// Model is what the webhook's formula needs: medians over runs.
type Model struct {
	StartMB           float64 // RSS with no connection
	IdleKBPerConn     float64 // least-squares slope of the idle medians
	ActiveKBPerConn   float64 // least-squares slope of the active peaks
	ActiveInterceptMB float64 // active line at zero connections
}

// Summarize fits the medians of r.
func (r *MemoryResult) Summarize() Model {
	xs := make([]float64, len(r.Steps))
	idle := make([]float64, len(r.Steps))
	active := make([]float64, len(r.Steps))
	for i, n := range r.Steps {
		xs[i] = float64(n)
		idle[i] = stats.Median(r.IdleKB[i])
		active[i] = stats.Median(r.ActiveKB[i])
	}
	start := stats.Median(r.StartKB)
	// The idle line includes the start point: an idle connection costs what
	// it adds to a sidecar that has none.
	ix := append([]float64{0}, xs...)
	iy := append([]float64{start}, idle...)
	m := Model{StartMB: start / 1024, IdleKBPerConn: stats.Slope(ix, iy), ActiveKBPerConn: stats.Slope(xs, active)}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += active[i]
	}
	if len(xs) > 0 {
		m.ActiveInterceptMB = (my/float64(len(xs)) - m.ActiveKBPerConn*mx/float64(len(xs))) / 1024
	}
	return m
}

// RunMemory measures the sidecar's resident memory per open connection.
func RunMemory(ctx context.Context, cfg MemoryConfig) (err error) {
	if cfg.Runs < 1 || len(cfg.Steps) == 0 || !slices.IsSorted(cfg.Steps) || cfg.Steps[0] < 1 || cfg.Active < 100*time.Millisecond {
		return errors.New("memory bench: want runs >= 1, ascending steps >= 1 and an active phase >= 100ms")
	}
	unlock, err := lockMachine(ctx, cfg.Out)
	if err != nil {
		return err
	}
	defer unlock()
	dir, err := os.MkdirTemp("", "podtls-bench-mem-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = fmt.Errorf("remove %s: %w", dir, rmErr)
		}
	}()
	bin := cfg.Sidecar
	if bin == "" {
		if bin, err = gobuild.Binary(ctx, cfg.RepoRoot, dir, "./sidecar/cmd/podtls-sidecar"); err != nil {
			return fmt.Errorf("build podtls-sidecar: %w", err)
		}
	}
	set, err := pki.Write(dir, time.Now())
	if err != nil {
		return fmt.Errorf("benchmark PKI: %w", err)
	}
	clientTLS, err := memClientTLS(set)
	if err != nil {
		return err
	}
	backend, err := echoBackend()
	if err != nil {
		return err
	}
	defer backend.Close()

	res := &MemoryResult{Steps: cfg.Steps,
		IdleKB: make([][]float64, len(cfg.Steps)), ActiveKB: make([][]float64, len(cfg.Steps))}
	fmt.Fprintf(cfg.Out, "memory model: one podtls-sidecar (inbound mTLS, tcp), %d runs, steps %v connections, %s of 16 KiB echoes per active step\n",
		cfg.Runs, cfg.Steps, cfg.Active)
	for run := 0; run < cfg.Runs; run++ {
		for _, active := range []bool{false, true} {
			m := memRun{cfg: cfg, dir: dir, bin: bin, set: set, tls: clientTLS, backend: backend.Addr().String()}
			start, perStep, err := m.run(ctx, run, active)
			if err != nil {
				return err
			}
			for i, kb := range perStep {
				if active {
					res.ActiveKB[i] = append(res.ActiveKB[i], kb)
				} else {
					res.IdleKB[i] = append(res.IdleKB[i], kb)
				}
			}
			if !active {
				res.StartKB = append(res.StartKB, start)
			}
		}
	}
	reportMemory(cfg.Out, res)
	if cfg.JSONOutput != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return fmt.Errorf("encode results: %w", err)
		}
		if err := os.WriteFile(cfg.JSONOutput, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", cfg.JSONOutput, err)
		}
	}
	return nil
}

func reportMemory(w io.Writer, res *MemoryResult) {
	m := res.Summarize()
	fmt.Fprintf(w, "\n%-12s %14s %18s\n", "connections", "idle RSS (MiB)", "active peak (MiB)")
	fmt.Fprintf(w, "%-12d %14.1f %18s\n", 0, m.StartMB, "-")
	for i, n := range res.Steps {
		fmt.Fprintf(w, "%-12d %14.1f %18.1f\n", n, stats.Median(res.IdleKB[i])/1024, stats.Median(res.ActiveKB[i])/1024)
	}
	fmt.Fprintf(w, "\nper connection (least-squares slope of the medians): idle %.1f KiB, active %.1f KiB\n", m.IdleKBPerConn, m.ActiveKBPerConn)
	fmt.Fprintf(w, "per 1,000 connections: idle %.1f MiB, active %.1f MiB; start %.1f MiB, active line at 0 connections %.1f MiB\n",
		m.IdleKBPerConn*1000/1024, m.ActiveKBPerConn*1000/1024, m.StartMB, m.ActiveInterceptMB)
	fmt.Fprintf(w, "ratio active/idle per connection: %.2f\n", stats.Ratio(m.ActiveKBPerConn, m.IdleKBPerConn))
	// The webhook's formula against this measurement: the connections it
	// allows, all active, on the measured line, as a share of the limit.
	fmt.Fprintf(w, "\nwebhook model (contract.MaxConnectionsFor: %d KiB per connection, %d MiB base, %d %% of the limit):\n",
		contract.ConnActiveBytes>>10, contract.ConnBaseBytes>>20, contract.MemoryHeadroomPercent)
	for _, mib := range []int64{32, 64, 128, 256, 512} {
		n := contract.MaxConnectionsFor(mib << 20)
		peak := m.ActiveInterceptMB + m.ActiveKBPerConn*float64(n)/1024
		fmt.Fprintf(w, "  limit %4d Mi: --max-connections %5d, measured active peak %6.1f MiB = %3.0f %% of the limit\n",
			mib, n, peak, 100*peak/float64(mib))
	}
}

// memRun is one sidecar measured through the steps, idle or active.
type memRun struct {
	cfg     MemoryConfig
	dir     string
	bin     string
	set     *pki.Set
	tls     *tls.Config
	backend string
	conns   []*tls.Conn
}

func (m *memRun) run(ctx context.Context, run int, active bool) (startKB float64, perStep []float64, err error) {
	inPort, err := freePort()
	if err != nil {
		return 0, nil, err
	}
	admin, err := freePort()
	if err != nil {
		return 0, nil, err
	}
	phase := "idle"
	if active {
		phase = "active"
	}
	p, err := startProc(m.dir, fmt.Sprintf("sidecar-mem-%d-%s", run, phase), []string{m.bin,
		"--inbound", fmt.Sprintf("127.0.0.1:%d=%s", inPort, m.backend),
		"--cert-dir", m.set.Server.Dir, "--trust-bundle", m.set.Root,
		"--admin", addr(admin), "--mode", "tcp", "--max-connections", "0", "--log-level", "warn"})
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		for _, c := range m.conns {
			c.Close()
		}
		p.stop()
	}()
	if err := p.waitReady(ctx, 15*time.Second, httpReady("http://"+addr(admin)+"/readyz")); err != nil {
		return 0, nil, err
	}
	start, err := settledRSS(ctx, p.pid())
	if err != nil {
		return 0, nil, err
	}
	for _, n := range m.cfg.Steps {
		if err := m.openUpTo(ctx, addr(inPort), n); err != nil {
			return 0, nil, fmt.Errorf("run %d %s, %d connections: %w", run, phase, n, err)
		}
		var kb float64
		if active {
			if err := m.transfer(ctx); err != nil {
				return 0, nil, fmt.Errorf("run %d active, %d connections: %w", run, n, err)
			}
			kb, err = statusKB(p.pid(), "VmHWM")
		} else {
			kb, err = settledRSS(ctx, p.pid())
		}
		if err != nil {
			return 0, nil, err
		}
		if p.exited() {
			return 0, nil, fmt.Errorf("sidecar exited at %d connections:\n%s", n, p.logTail())
		}
		fmt.Fprintf(m.cfg.Out, "  run %d %-6s %5d connections: %6.1f MiB\n", run+1, phase, n, kb/1024)
		perStep = append(perStep, kb)
	}
	return start, perStep, nil
}

// openUpTo opens mTLS connections until n are open, each proven end to end
// by one echoed byte (the sidecar has dialed the backend).
func (m *memRun) openUpTo(ctx context.Context, target string, n int) error {
	need := n - len(m.conns)
	if need <= 0 {
		return nil
	}
	const dialers = 16
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan struct{}, need)
	for range need {
		next <- struct{}{}
	}
	close(next)
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, err := roundTrip(ctx, target, m.tls)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if c != nil {
					m.conns = append(m.conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func roundTrip(ctx context.Context, target string, cfg *tls.Config) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := nc.(*tls.Conn)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		c.Close()
		return nil, fmt.Errorf("echo: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// transfer has every open connection echo 16 KiB chunks for cfg.Active.
func (m *memRun) transfer(ctx context.Context) error {
	deadline := time.Now().Add(m.cfg.Active)
	chunk := make([]byte, 16<<10)
	errs := make(chan error, len(m.conns))
	var wg sync.WaitGroup
	for _, c := range m.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, len(chunk))
			_ = c.SetDeadline(deadline.Add(30 * time.Second))
			defer func() { _ = c.SetDeadline(time.Time{}) }()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := c.Write(chunk); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// settledRSS is the median of five VmRSS samples over half a second, taken
// after the sidecar had half a second to finish what the last step started.
func settledRSS(ctx context.Context, pid int) (float64, error) {
	sleep(ctx, 500*time.Millisecond)
	var xs []float64
	for range 5 {
		kb, err := statusKB(pid, "VmRSS")
		if err != nil {
			return 0, err
		}
		xs = append(xs, kb)
		sleep(ctx, 100*time.Millisecond)
	}
	return stats.Median(xs), ctx.Err()
}

// statusKB reads one "KEY: N kB" line of /proc/PID/status.
func statusKB(pid int, key string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status of %d: %w", pid, err)
	}
	_, val, ok := cutLine(string(b), key+":")
	if !ok {
		return 0, fmt.Errorf("status of %d: no %s", pid, key)
	}
	kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
	if err != nil {
		return 0, fmt.Errorf("status of %d: %s: %w", pid, key, err)
	}
	return kb, nil
}

func memClientTLS(set *pki.Set) (*tls.Config, error) {
	pem, err := os.ReadFile(set.Root)
	if err != nil {
		return nil, fmt.Errorf("read root: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", set.Root)
	}
	cert, err := tls.LoadX509KeyPair(set.Client.Cert, set.Client.Key)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return &tls.Config{RootCAs: roots, ServerName: pki.ServerName, Certificates: []tls.Certificate{cert},
		MinVersion: tls.VersionTLS13}, nil
}

// echoBackend is the app: it echoes every byte back.
func echoBackend() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("echo backend: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l, nil
}
