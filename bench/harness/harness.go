// Package harness runs the side-by-side data-plane benchmark: a shared
// backend, nginx terminating TLS (HTTP/1.1 and h2) and mTLS, and
// podtls-sidecar as public edge, inbound mTLS and a full outbound -> inbound
// mesh path in tcp mode, and as a TLS-terminating HTTP proxy in http mode,
// all measured in the same run, interleaved round by round, and reported as
// medians of ratios.
package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/podtls/podtls/bench/handshake"
	"github.com/podtls/podtls/bench/load"
	"github.com/podtls/podtls/bench/pki"
	"github.com/podtls/podtls/internal/gobuild"
)

// Config is everything a run can be told.
type Config struct {
	RepoRoot  string        // module root: where bin/tools and the sidecar sources are
	Duration  time.Duration // of each measurement
	Rounds    int
	Workers   int    // goroutines of the handshake client
	Sidecar   string // prebuilt podtls-sidecar; empty: build it from RepoRoot
	NoSidecar bool   // measure direct and nginx only
	NoPin     bool   // do not pin with taskset
	// Nice is the scheduling priority of every benchmark process (servers and
	// load generators); negative values need root. Other work on the machine
	// otherwise gets the same CPU share per process, which favours rows that
	// run more processes (a proxy plus the backend) over the direct row.
	Nice int
	// RealTime runs servers and load generators under SCHED_FIFO (chrt -f 1):
	// on a busy machine a woken proxy otherwise waits for other processes'
	// time slices, and ping-pong request latency measures the scheduler. It
	// leaves other work about 5% of each CPU while the bench runs.
	RealTime bool
	// PerfDir, when set, receives `perf record -g` profiles of the proxies
	// during round 1 of every proxied keep-alive row.
	PerfDir    string
	Self       string // this program's executable, re-run as the handshake client; empty: run it in-process
	KeepTmp    bool   // leave the temp dir (configs, logs) for inspection
	JSONOutput string // also write raw results here
	Out        io.Writer
}

// MissingToolsError lists tools the machine lacks; the message says how to install them.
type MissingToolsError struct{ Missing []string }

func (e *MissingToolsError) Error() string {
	return fmt.Sprintf("missing %v: run `make test-deps` (hack/install-test-deps.sh: nginx, wrk and h2load from Debian, fortio into bin/tools), "+
		"or by hand: apt-get install nginx wrk nghttp2-client && GOBIN=$PWD/bin/tools go install fortio.org/fortio@v1.66.0", e.Missing)
}

type tools struct{ nginx, wrk, fortio, h2load, taskset, nice, chrt string }

// findTools looks in bin/tools first, then PATH.
func findTools(repo string) (tools, error) {
	var t tools
	var missing []string
	for _, want := range []struct {
		name string
		into *string
	}{{"nginx", &t.nginx}, {"wrk", &t.wrk}, {"fortio", &t.fortio}, {"h2load", &t.h2load}} {
		local := filepath.Join(repo, "bin", "tools", want.name)
		if st, err := os.Stat(local); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			*want.into = local
			continue
		}
		// Debian puts nginx in /usr/sbin, which is not on every PATH.
		for _, p := range []string{want.name, "/usr/sbin/" + want.name} {
			if found, err := exec.LookPath(p); err == nil {
				*want.into = found
				break
			}
		}
		if *want.into == "" {
			missing = append(missing, want.name)
		}
	}
	if len(missing) > 0 {
		return t, &MissingToolsError{Missing: missing}
	}
	if p, err := exec.LookPath("taskset"); err == nil {
		t.taskset = p
	}
	if p, err := exec.LookPath("nice"); err == nil {
		t.nice = p
	}
	if p, err := exec.LookPath("chrt"); err == nil {
		t.chrt = p
	}
	return t, nil
}

// env is one running benchmark setup.
type env struct {
	cfg     Config
	tools   tools
	dir     string
	pki     *pki.Set
	procs   []*proc
	pinned  bool
	loadPin []string // prefix for load generators (CPU0)
	srvPin  []string // prefix for servers (CPU1)
	runner  load.Runner

	backendPort, nginxTLSPort, nginxMTLSPort   int
	inPort, outPort, inAdmin, outAdmin         int
	backend, nginxProxy, sidecarIn, sidecarOut *proc

	// HTTP/2 and http mode: the backend's h2c port, nginx's h2 port, the tcp
	// sidecar's h2 listener (spliced to the h2c port), the http-mode sidecar.
	backendH2CPort, nginxH2Port, inH2Port, httpPort, httpAdmin int
	sidecarHTTP                                                *proc
}

// Run performs the whole benchmark and prints the report to cfg.Out.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Rounds < 1 || cfg.Duration < time.Second || cfg.Workers < 1 {
		return errors.New("rounds and workers must be >= 1 and the duration >= 1s")
	}
	t, err := findTools(cfg.RepoRoot)
	if err != nil {
		return err
	}
	if cfg.PerfDir != "" {
		if _, err := exec.LookPath("perf"); err != nil {
			return fmt.Errorf("profiles asked for, but perf is missing (Debian: linux-perf): %w", err)
		}
		if cfg.PerfDir, err = filepath.Abs(cfg.PerfDir); err != nil {
			return fmt.Errorf("perf dir: %w", err)
		}
		if err := os.MkdirAll(cfg.PerfDir, 0o755); err != nil {
			return fmt.Errorf("perf dir: %w", err)
		}
	}
	unlock, err := lockMachine(ctx, cfg.Out)
	if err != nil {
		return err
	}
	defer unlock()
	dir, err := os.MkdirTemp("", "podtls-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	e := &env{cfg: cfg, tools: t, dir: dir}
	defer func() {
		e.stopAll()
		if cfg.KeepTmp {
			fmt.Fprintf(cfg.Out, "kept configs and logs in %s\n", dir)
			return
		}
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = fmt.Errorf("remove %s: %w", dir, rmErr)
		}
	}()
	if err := e.setup(ctx); err != nil {
		return err
	}
	res, err := e.measure(ctx)
	if err != nil {
		return err
	}
	report(cfg.Out, res)
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

// lockMachine takes a lock shared by every podtls-bench on this machine: two
// runs at once would each measure the other. It waits for a running one.
func lockMachine(ctx context.Context, out io.Writer) (func(), error) {
	path := filepath.Join(os.TempDir(), "podtls-bench.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bench lock %s: %w", path, err)
	}
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("bench lock %s: %w", path, err)
		}
		if !waited {
			fmt.Fprintf(out, "another podtls-bench is running on this machine; waiting for it to finish\n")
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (e *env) stopAll() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop()
	}
}

func (e *env) start(ctx context.Context, name string, args []string, ready func() error) (*proc, error) {
	p, err := startProc(e.dir, name, append(append([]string{}, e.srvPin...), args...))
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)
	if err := p.waitReady(ctx, 15*time.Second, ready); err != nil {
		return nil, err
	}
	return p, nil
}

func (e *env) setup(ctx context.Context) error {
	switch {
	case e.cfg.RealTime && e.tools.chrt == "":
		return errors.New("real-time scheduling asked for, but chrt (util-linux) is missing")
	case e.cfg.RealTime:
		prio := []string{e.tools.chrt, "-f", "1"}
		e.loadPin, e.srvPin = prio, prio
	case e.tools.nice != "" && e.cfg.Nice != 0:
		prio := []string{e.tools.nice, "-n", strconv.Itoa(e.cfg.Nice)}
		e.loadPin, e.srvPin = prio, prio
	}
	if e.tools.taskset != "" && !e.cfg.NoPin && cpuCount() >= 2 {
		e.loadPin = append(append([]string{}, e.loadPin...), e.tools.taskset, "-c", "0")
		e.srvPin = append(append([]string{}, e.srvPin...), e.tools.taskset, "-c", "1")
		e.pinned = true
	}
	var sidecarBin string
	if !e.cfg.NoSidecar {
		var err error
		if sidecarBin, err = e.sidecarBinary(ctx); err != nil {
			return err
		}
	}
	var err error
	if e.pki, err = pki.Write(e.dir, time.Now()); err != nil {
		return fmt.Errorf("benchmark PKI: %w", err)
	}
	script := filepath.Join(e.dir, "wrk.lua")
	if err := os.WriteFile(script, []byte(load.WrkScript), 0o644); err != nil {
		return fmt.Errorf("wrk script: %w", err)
	}
	e.runner = load.Runner{WrkBin: e.tools.wrk, FortioBin: e.tools.fortio, H2loadBin: e.tools.h2load, Pin: e.loadPin, WrkScript: script, TmpDir: e.dir}
	for _, p := range []*int{&e.backendPort, &e.nginxTLSPort, &e.nginxMTLSPort, &e.inPort, &e.outPort, &e.inAdmin, &e.outAdmin,
		&e.backendH2CPort, &e.nginxH2Port, &e.inH2Port, &e.httpPort, &e.httpAdmin} {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	np := nginxParams{
		Dir: e.dir, Root: os.Geteuid() == 0, Body: backendBody,
		BackendPort: e.backendPort, TLSPort: e.nginxTLSPort, MTLSPort: e.nginxMTLSPort,
		BackendH2CPort: e.backendH2CPort, H2Port: e.nginxH2Port, HTTP2On: http2On(toolVersion(e.tools.nginx, "-v")),
		EdgeCert: e.pki.Edge.Cert, EdgeKey: e.pki.Edge.Key,
		ServerCert: e.pki.Server.Cert, ServerKey: e.pki.Server.Key, RootCA: e.pki.Root,
	}
	np.Name = "backend"
	conf, err := writeNginxConf(backendConf, np)
	if err != nil {
		return err
	}
	if e.backend, err = e.start(ctx, "backend", nginxArgs(e.tools.nginx, e.dir, conf), tcpReady(addr(e.backendPort))); err != nil {
		return err
	}
	np.Name = "nginx"
	if conf, err = writeNginxConf(proxyConf, np); err != nil {
		return err
	}
	if e.nginxProxy, err = e.start(ctx, "nginx", nginxArgs(e.tools.nginx, e.dir, conf), tcpReady(addr(e.nginxMTLSPort))); err != nil {
		return err
	}
	if sidecarBin == "" {
		return nil
	}
	// tcp mode; the second listener splices h2 (ALPN) to the backend's h2c port.
	in := []string{sidecarBin,
		"--inbound", fmt.Sprintf("127.0.0.1:%d=127.0.0.1:%d", e.inPort, e.backendPort),
		"--inbound", fmt.Sprintf("127.0.0.1:%d=127.0.0.1:%d/h2c", e.inH2Port, e.backendH2CPort),
		"--cert-dir", e.pki.Server.Dir, "--trust-bundle", e.pki.Root,
		"--external-cert-dir", e.pki.Edge.Dir, "--admin", addr(e.inAdmin), "--mode", "tcp"}
	if e.sidecarIn, err = e.start(ctx, "sidecar-inbound", in, httpReady("http://"+addr(e.inAdmin)+"/readyz")); err != nil {
		return err
	}
	out := []string{sidecarBin,
		"--outbound", fmt.Sprintf("127.0.0.1:%d=127.0.0.1:%d#%s", e.outPort, e.inPort, pki.ServerID),
		"--cert-dir", e.pki.Client.Dir, "--trust-bundle", e.pki.Root,
		"--admin", addr(e.outAdmin), "--mode", "tcp"}
	if e.sidecarOut, err = e.start(ctx, "sidecar-outbound", out, httpReady("http://"+addr(e.outAdmin)+"/readyz")); err != nil {
		return err
	}
	// http mode: terminates TLS (h2 or HTTP/1.1, by ALPN) and speaks HTTP/1.1
	// to the backend over its own keep-alive pool, like nginx's proxy_pass.
	httpMode := []string{sidecarBin,
		"--inbound", fmt.Sprintf("127.0.0.1:%d=127.0.0.1:%d", e.httpPort, e.backendPort),
		"--cert-dir", e.pki.Server.Dir, "--trust-bundle", e.pki.Root,
		"--external-cert-dir", e.pki.Edge.Dir, "--admin", addr(e.httpAdmin), "--mode", "http"}
	if e.sidecarHTTP, err = e.start(ctx, "sidecar-http", httpMode, httpReady("http://"+addr(e.httpAdmin)+"/readyz")); err != nil {
		return err
	}
	return nil
}

// sidecarBinary returns cfg.Sidecar or builds ./sidecar/cmd/podtls-sidecar into the temp dir.
func (e *env) sidecarBinary(ctx context.Context) (string, error) {
	if e.cfg.Sidecar != "" {
		return e.cfg.Sidecar, nil
	}
	bin, err := gobuild.Binary(ctx, e.cfg.RepoRoot, e.dir, "./sidecar/cmd/podtls-sidecar")
	if err != nil {
		return "", fmt.Errorf("build podtls-sidecar (set BENCH_NO_SIDECAR=1 to measure direct and nginx only): %w", err)
	}
	return bin, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func cpuCount() int {
	// The affinity mask, not the machine: a pinned caller has fewer usable CPUs.
	var n int
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 1
	}
	if _, after, ok := cutLine(string(b), "Cpus_allowed_list:"); ok {
		n = countCPUs(after)
	}
	return max(n, 1)
}

// handshakeLoad runs the handshake client in a child process of this program,
// pinned like the other load generators.
func (e *env) handshakeLoad(ctx context.Context, port int, serverName string, mtls bool) (handshake.Result, error) {
	if e.cfg.Self == "" {
		// No executable to re-run (tests): load from this process, unpinned.
		var out bytes.Buffer
		cert, key := "", ""
		if mtls {
			cert, key = e.pki.Client.Cert, e.pki.Client.Key
		}
		if err := HandshakeMain(ctx, addr(port), serverName, e.pki.Root, cert, key, e.cfg.Workers, e.cfg.Duration, &out); err != nil {
			return handshake.Result{}, fmt.Errorf("handshake client: %w", err)
		}
		var r handshake.Result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			return handshake.Result{}, fmt.Errorf("handshake client output %q: %w", out.Bytes(), err)
		}
		return r, nil
	}
	args := append(append([]string{}, e.loadPin...), e.cfg.Self, "handshake",
		"-addr", addr(port), "-server-name", serverName, "-ca", e.pki.Root,
		"-c", strconv.Itoa(e.cfg.Workers), "-d", e.cfg.Duration.String())
	if mtls {
		args = append(args, "-cert", e.pki.Client.Cert, "-key", e.pki.Client.Key)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return handshake.Result{}, fmt.Errorf("handshake client: %w", err)
	}
	var r handshake.Result
	if err := json.Unmarshal(out, &r); err != nil {
		return handshake.Result{}, fmt.Errorf("handshake client output %q: %w", out, err)
	}
	return r, nil
}

// HandshakeMain is the body of the `handshake` subcommand: it loads one
// server and prints a handshake.Result as JSON on stdout.
func HandshakeMain(ctx context.Context, addrPort, serverName, caFile, certFile, keyFile string, workers int, d time.Duration, stdout io.Writer) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read CA %s: %w", caFile, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	cfg := handshake.Config{Addr: addrPort, ServerName: serverName, Roots: roots, Workers: workers, Duration: d}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("client certificate %s: %w", certFile, err)
		}
		cfg.ClientCert = &c
	}
	before, err := cpuTime()
	if err != nil {
		return err
	}
	r, err := handshake.Run(ctx, cfg)
	if err != nil {
		return err
	}
	after, err := cpuTime()
	if err != nil {
		return err
	}
	r.ClientCPU = (after - before).Seconds() / r.Elapsed.Seconds()
	return json.NewEncoder(stdout).Encode(r)
}

// cpuTime is the user+system CPU time this process has used.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
