package harness

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/bench/handshake"
	"github.com/podtls/podtls/bench/load"
	"github.com/podtls/podtls/bench/pki"
)

// Row is one keep-alive target measured with one load client.
type Row struct {
	Key    string `json:"key"`
	Label  string `json:"label"`
	Client string `json:"client"`         // wrk, fortio or h2load
	Base   string `json:"base,omitempty"` // direct row of the same client
	Ref    string `json:"ref,omitempty"`  // matching nginx row
	// Results[conns][round]; nil where the measurement failed.
	Results map[int][]*load.Result `json:"results"`
	// CPU[conns][round] is the CPU time the proxies of this row used during
	// the measurement, in seconds; -1 where unknown (JSON has no NaN).
	CPU map[int][]float64 `json:"proxy_cpu_seconds,omitempty"`
	Err string            `json:"error,omitempty"`

	target load.Target
	procs  []cpuOwner // the proxies of this path; none for direct
}

// HSRow is one server under the handshake client.
type HSRow struct {
	Key     string              `json:"key"`
	Label   string              `json:"label"`
	Ref     string              `json:"ref,omitempty"`
	Results []*handshake.Result `json:"results"`
	// CPU is the CPU time of the proxy and the backend during each round, in seconds; -1 where unknown.
	CPU []float64 `json:"server_cpu_seconds"`
	Err string    `json:"error,omitempty"`

	procs []cpuOwner

	port       int
	serverName string
	mtls       bool
}

// RSS is one server's resident memory in kB; -1 where it could not be read.
type RSS struct {
	Label     string `json:"label"`
	StartKB   int64  `json:"start_kb"`
	StartAnon int64  `json:"start_anon_kb"`
	AfterLoad int64  `json:"after_load_kb"`
	AfterAnon int64  `json:"after_load_anon_kb"`
	pid       int
	tree      bool // add the direct children (nginx workers)
}

// Results is the whole run, as reported and as written to JSON.
type Results struct {
	Machine    string   `json:"machine"`
	LoadBefore string   `json:"load_before"`
	LoadAfter  string   `json:"load_after"`
	Tools      string   `json:"tools"`
	Pinned     bool     `json:"pinned"`
	Sched      string   `json:"sched"`
	Duration   string   `json:"duration"`
	Rounds     int      `json:"rounds"`
	Workers    int      `json:"handshake_workers"`
	Conns      []int    `json:"conns"`
	Rows       []*Row   `json:"rows"`
	Handshakes []*HSRow `json:"handshakes"`
	Memory     []*RSS   `json:"memory"`
	Elapsed    string   `json:"elapsed"`
}

// connCounts are the keep-alive concurrency levels, in the order measured.
var connCounts = []int{32, 1}

func (e *env) rows() []*Row {
	url := func(scheme, host string, port int) string {
		return scheme + "://" + host + ":" + strconv.Itoa(port) + "/"
	}
	mtls := func(u string) load.Target {
		return load.Target{URL: u, CA: e.pki.Root, Cert: e.pki.Client.Cert, Key: e.pki.Client.Key}
	}
	rows := []*Row{
		{Key: "direct-wrk", Label: "direct (plaintext)", Client: "wrk", target: load.Target{URL: url("http", "127.0.0.1", e.backendPort)}},
		{Key: "nginx-tls", Label: "nginx TLS", Client: "wrk", Base: "direct-wrk", target: load.Target{URL: url("https", pki.EdgeName, e.nginxTLSPort)}},
	}
	if e.sidecarIn != nil {
		rows = append(rows,
			&Row{Key: "sidecar-edge", Label: "sidecar edge TLS (SNI)", Client: "wrk", Base: "direct-wrk", Ref: "nginx-tls", target: load.Target{URL: url("https", pki.EdgeName, e.inPort)}},
			&Row{Key: "mesh", Label: "mesh out->mTLS->in", Client: "wrk", Base: "direct-wrk", target: load.Target{URL: url("http", "127.0.0.1", e.outPort)}},
			&Row{Key: "sidecar-http-h1", Label: "sidecar http mode TLS", Client: "wrk", Base: "direct-wrk", Ref: "nginx-tls", target: load.Target{URL: url("https", pki.EdgeName, e.httpPort)}})
	}
	rows = append(rows,
		&Row{Key: "direct-fortio", Label: "direct (plaintext)", Client: "fortio", target: load.Target{URL: url("http", "127.0.0.1", e.backendPort)}},
		&Row{Key: "nginx-mtls", Label: "nginx mTLS", Client: "fortio", Base: "direct-fortio", target: mtls(url("https", pki.ServerName, e.nginxMTLSPort))})
	if e.sidecarIn != nil {
		rows = append(rows,
			&Row{Key: "sidecar-mtls", Label: "sidecar inbound mTLS", Client: "fortio", Base: "direct-fortio", Ref: "nginx-mtls", target: mtls(url("https", pki.ServerName, e.inPort))})
	}
	// h2 over TLS, one stream at a time per connection. No direct row: the
	// backend's HTTP/1.1 port does not speak h2.
	rows = append(rows, &Row{Key: "nginx-h2", Label: "nginx TLS h2", Client: "h2load", target: load.Target{URL: url("https", pki.EdgeName, e.nginxH2Port)}})
	if e.sidecarIn != nil {
		rows = append(rows,
			&Row{Key: "sidecar-http-h2", Label: "sidecar http mode h2", Client: "h2load", Ref: "nginx-h2", target: load.Target{URL: url("https", pki.EdgeName, e.httpPort)}},
			&Row{Key: "sidecar-tcp-h2", Label: "sidecar tcp mode h2 (h2c app)", Client: "h2load", Ref: "nginx-h2", target: load.Target{URL: url("https", pki.EdgeName, e.inH2Port)}})
	}
	nginx := []cpuOwner{{pid: e.nginxProxy.pid(), tree: true}}
	var in, both, httpMode []cpuOwner
	if e.sidecarIn != nil {
		in = []cpuOwner{{pid: e.sidecarIn.pid()}}
		both = []cpuOwner{{pid: e.sidecarIn.pid()}, {pid: e.sidecarOut.pid()}}
		httpMode = []cpuOwner{{pid: e.sidecarHTTP.pid()}}
	}
	procs := map[string][]cpuOwner{"nginx-tls": nginx, "nginx-mtls": nginx, "nginx-h2": nginx, "sidecar-edge": in, "sidecar-mtls": in, "mesh": both,
		"sidecar-http-h1": httpMode, "sidecar-http-h2": httpMode, "sidecar-tcp-h2": in}
	for _, r := range rows {
		r.Results = map[int][]*load.Result{}
		r.CPU = map[int][]float64{}
		r.procs = procs[r.Key]
	}
	return rows
}

func (e *env) hsRows() []*HSRow {
	backend := cpuOwner{pid: e.backend.pid(), tree: true}
	nginx := []cpuOwner{{pid: e.nginxProxy.pid(), tree: true}, backend}
	var in []cpuOwner
	if e.sidecarIn != nil {
		in = []cpuOwner{{pid: e.sidecarIn.pid()}, backend}
	}
	rows := []*HSRow{
		{Key: "hs-nginx-tls", Label: "nginx TLS", port: e.nginxTLSPort, serverName: pki.EdgeName, procs: nginx},
	}
	if e.sidecarIn != nil {
		rows = append(rows, &HSRow{Key: "hs-sidecar-edge", Label: "sidecar edge TLS", Ref: "hs-nginx-tls", port: e.inPort, serverName: pki.EdgeName, procs: in})
	}
	rows = append(rows, &HSRow{Key: "hs-nginx-mtls", Label: "nginx mTLS", port: e.nginxMTLSPort, serverName: pki.ServerName, mtls: true, procs: nginx})
	if e.sidecarIn != nil {
		rows = append(rows, &HSRow{Key: "hs-sidecar-mtls", Label: "sidecar inbound mTLS", Ref: "hs-nginx-mtls", port: e.inPort, serverName: pki.ServerName, mtls: true, procs: in})
	}
	return rows
}

func (e *env) keepAlive(ctx context.Context, r *Row, conns int, d time.Duration) (load.Result, error) {
	switch r.Client {
	case "wrk":
		return e.runner.Wrk(ctx, r.target, conns, d)
	case "h2load":
		return e.runner.H2load(ctx, r.target, conns, d)
	}
	return e.runner.Fortio(ctx, r.target, conns, d)
}

func (e *env) measure(ctx context.Context) (*Results, error) {
	began := time.Now()
	res := &Results{
		Machine: machine(), LoadBefore: loadAvg(), Tools: e.toolVersions(),
		Pinned: e.pinned, Sched: e.schedLabel(), Duration: e.cfg.Duration.String(), Rounds: e.cfg.Rounds,
		Workers: e.cfg.Workers, Conns: connCounts,
		Rows: e.rows(), Handshakes: e.hsRows(),
	}
	res.Memory = append(res.Memory, &RSS{Label: "nginx master+worker", pid: e.nginxProxy.pid(), tree: true})
	if e.sidecarIn != nil {
		res.Memory = append(res.Memory,
			&RSS{Label: "sidecar (inbound+edge)", pid: e.sidecarIn.pid()},
			&RSS{Label: "sidecar (outbound)", pid: e.sidecarOut.pid()},
			&RSS{Label: "sidecar (http mode)", pid: e.sidecarHTTP.pid()})
	}
	out := e.cfg.Out
	fmt.Fprintf(out, "podtls-bench: %s; %s\n", res.Machine, res.Tools)
	fmt.Fprintf(out, "load average before: %s; %d rounds of %s per measurement\n", res.LoadBefore, e.cfg.Rounds, e.cfg.Duration)
	if busy(res.LoadBefore) && !e.cfg.RealTime {
		fmt.Fprintf(out, "WARNING: the machine is busy (load %s): woken proxies wait for other processes' time slices,\n"+
			"  so latency and req/s will measure the scheduler. Use a quiet machine, or BENCH_REALTIME=1 (as root).\n", res.LoadBefore)
	}

	// Idle memory once everything has settled after start-up.
	sleep(ctx, time.Second)
	for _, m := range res.Memory {
		m.StartKB, m.StartAnon = e.rss(m)
	}

	// Warm-up doubles as a check: a target that does not answer is dropped,
	// with the reason, instead of failing every round.
	for _, r := range res.Rows {
		if _, err := e.keepAlive(ctx, r, 32, time.Second); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.Err = "warm-up failed: " + firstLine(err)
			fmt.Fprintf(out, "  %-29s %-6s dropped: %v\n", r.Label, r.Client, err)
		}
	}

	for round := 1; round <= e.cfg.Rounds; round++ {
		for _, conns := range connCounts {
			for _, r := range res.Rows {
				if r.Err == "" {
					e.measureRow(ctx, round, conns, r)
				}
			}
		}
		for _, h := range res.Handshakes {
			if h.Err == "" {
				e.measureHandshakes(ctx, round, h)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}

	sleep(ctx, 2*time.Second)
	// A server that died mid-run explains a column of errors; say so loudly.
	for _, p := range e.procs {
		if p.exited() {
			fmt.Fprintf(out, "WARNING: %s exited during the run (%v); its log ends with:\n%s\n", p.name, p.err, p.logTail())
		}
	}
	for _, m := range res.Memory {
		m.AfterLoad, m.AfterAnon = e.rss(m)
	}
	res.LoadAfter = loadAvg()
	res.Elapsed = time.Since(began).Round(time.Second).String()
	return res, ctx.Err()
}

// cpuDuring runs measure and returns the CPU seconds owners used meanwhile;
// NaN when there are no owners or /proc could not be read.
func (e *env) cpuDuring(owners []cpuOwner, measure func() error) (float64, error) {
	if len(owners) == 0 {
		return math.NaN(), measure()
	}
	before, cerr := cpuSeconds(owners)
	err := measure()
	after, cerr2 := cpuSeconds(owners)
	if cerr != nil || cerr2 != nil {
		return math.NaN(), err
	}
	return after - before, err
}

// perfRecord samples the proxies with `perf record -g` while a measurement
// runs and returns a function that waits for perf to finish. Failures only
// print: a profile is a bonus, not a result.
func (e *env) perfRecord(ctx context.Context, name string, owners []cpuOwner) func() {
	var pids []string
	for _, o := range owners {
		pids = append(pids, strconv.Itoa(o.pid))
		if o.tree {
			kids, _ := children(o.pid)
			for _, k := range kids {
				pids = append(pids, strconv.Itoa(k))
			}
		}
	}
	out := filepath.Join(e.cfg.PerfDir, name+".perf.data")
	args := []string{"perf", "record", "-q", "-F", "999", "-g", "-p", strings.Join(pids, ","),
		"-o", out, "--", "sleep", strconv.Itoa(int(e.cfg.Duration.Seconds()))}
	if e.cfg.RealTime {
		// perf must drain its buffers while real-time proxies keep the CPUs busy.
		args = append([]string{e.tools.chrt, "-f", "1"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(e.cfg.Out, "  perf record %s: %v\n", name, err)
		return func() {}
	}
	return func() {
		if err := cmd.Wait(); err != nil {
			fmt.Fprintf(e.cfg.Out, "  perf record %s: %v\n", name, err)
			return
		}
		fmt.Fprintf(e.cfg.Out, "  profile: perf report -i %s --no-children --sort dso,symbol\n", out)
	}
}

// known maps NaN (not measured) to -1, which JSON can carry.
func known(v float64) float64 {
	if math.IsNaN(v) {
		return -1
	}
	return v
}

// perUnit is CPU seconds per request or connection, in microseconds.
func perUnit(cpuSeconds float64, n int64) float64 {
	if n <= 0 || cpuSeconds < 0 || math.IsNaN(cpuSeconds) {
		return math.NaN()
	}
	return cpuSeconds / float64(n) * 1e6
}

func (e *env) schedLabel() string {
	switch {
	case e.cfg.RealTime:
		return "SCHED_FIFO"
	case e.tools.nice != "" && e.cfg.Nice != 0:
		return "nice " + strconv.Itoa(e.cfg.Nice)
	}
	return "default priority"
}

// measureRow runs one keep-alive measurement and appends its result (nil on
// failure) and the proxies' CPU time to the row.
func (e *env) measureRow(ctx context.Context, round, conns int, r *Row) {
	var got load.Result
	cpu, err := e.cpuDuring(r.procs, func() error {
		if round == 1 && e.cfg.PerfDir != "" && len(r.procs) > 0 {
			stop := e.perfRecord(ctx, fmt.Sprintf("%s-c%d", r.Key, conns), r.procs)
			defer stop()
		}
		var err error
		got, err = e.keepAlive(ctx, r, conns, e.cfg.Duration)
		return err
	})
	r.CPU[conns] = append(r.CPU[conns], known(cpu))
	if err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(e.cfg.Out, "  round %d c=%-2d %-29s %-6s error: %v\n", round, conns, r.Label, r.Client, err)
		}
		r.Results[conns] = append(r.Results[conns], nil)
		return
	}
	reopened := ""
	if got.Sockets > int64(conns) {
		reopened = fmt.Sprintf(" (%d sockets for %d connections: the server closed some)", got.Sockets, conns)
	}
	fmt.Fprintf(e.cfg.Out, "  round %d c=%-2d %-29s %-6s %9.0f req/s  p50 %-8s p99 %-8s proxy CPU %s/req  errors %d%s\n",
		round, conns, r.Label, r.Client, got.RPS, us(got.P50), us(got.P99), usDec(perUnit(cpu, got.Requests)), got.Errors, reopened)
	r.Results[conns] = append(r.Results[conns], &got)
}

// measureHandshakes runs the handshake client against one server. A server
// that fails in round 1 is dropped from the later rounds.
func (e *env) measureHandshakes(ctx context.Context, round int, h *HSRow) {
	var got handshake.Result
	cpu, err := e.cpuDuring(h.procs, func() error {
		var err error
		got, err = e.handshakeLoad(ctx, h.port, h.serverName, h.mtls)
		return err
	})
	h.CPU = append(h.CPU, known(cpu))
	if err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(e.cfg.Out, "  round %d handshakes %-22s error: %v\n", round, h.Label, err)
			if round == 1 {
				h.Err = firstLine(err)
			}
		}
		h.Results = append(h.Results, nil)
		return
	}
	fmt.Fprintf(e.cfg.Out, "  round %d handshakes %-22s %7.0f conn/s  server CPU %s/conn  client CPU %.2f cores  errors %d resumed %d %s\n",
		round, h.Label, got.PerSecond(), usf(perUnit(cpu, got.Conns)), got.ClientCPU, got.Errors, got.Resumed, got.FirstErr)
	h.Results = append(h.Results, &got)
}

// rss returns VmRSS and RssAnon in kB, -1 when they cannot be read.
func (e *env) rss(m *RSS) (int64, int64) {
	var got mem
	var err error
	if m.tree {
		got, err = treeRSSKB(m.pid)
	} else {
		got, err = rssKB(m.pid)
	}
	if err != nil {
		fmt.Fprintf(e.cfg.Out, "  rss %s: %v\n", m.Label, err)
		return -1, -1
	}
	return got.RSS, got.Anon
}

// toolVersion is the first line a tool prints when asked for its version; "?" if none.
func toolVersion(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "?"
	}
	return firstLineOf(string(out))
}

func (e *env) toolVersions() string {
	v := toolVersion
	nginx := strings.TrimPrefix(v(e.tools.nginx, "-v"), "nginx version: ")
	wrk := strings.Fields(v(e.tools.wrk, "-v") + " ? ?")[1]
	fortio := strings.Fields(v(e.tools.fortio, "version") + " ?")[0]
	h2load := strings.Fields(v(e.tools.h2load, "--version") + " ? ?")[1]
	return fmt.Sprintf("%s, wrk %s, fortio %s, h2load %s, %s", nginx, wrk, fortio, h2load, runtime.Version())
}

// machine describes the CPU, the CPU count and the kernel.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if _, v, ok := cutLine(string(b), "model name"); ok {
			model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d x %s, Linux %s", runtime.NumCPU(), model, kernel)
}

// busy reports a 1-minute load average above 1.5 (the benchmark itself keeps
// about two cores busy only while it measures).
func busy(loadavg string) bool {
	f := strings.Fields(loadavg)
	if len(f) == 0 {
		return false
	}
	l, err := strconv.ParseFloat(f[0], 64)
	return err == nil && l > 1.5
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cutLine finds the first line starting with key and returns what follows it.
func cutLine(text, key string) (string, string, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			return line, rest, true
		}
	}
	return "", "", false
}

// countCPUs counts the CPUs of a list like "0-1,4,6-7".
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(list), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				continue
			}
		}
		n += b - a + 1
	}
	return n
}

func firstLine(err error) string { return firstLineOf(err.Error()) }

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "us"
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
