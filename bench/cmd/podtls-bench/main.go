// Command podtls-bench measures podtls-sidecar side by side with direct
// connections and nginx on this machine (see docs/benchmarks.md).
//
//	podtls-bench [flags]        the whole benchmark (make bench-sidecar)
//	podtls-bench handshake ...  the full-handshake load client, run by the benchmark
//	podtls-bench memory [flags] the sidecar's memory model: RSS per open connection (make bench-memory)
//
// Environment defaults: BENCH_DURATION (5s), BENCH_ROUNDS (3), BENCH_HS_WORKERS
// (32), BENCH_NICE (-10 as root, else 0), BENCH_REALTIME=1, BENCH_SIDECAR (prebuilt binary), BENCH_NO_SIDECAR=1, BENCH_NO_PIN=1,
// BENCH_JSON (also write raw results there), BENCH_PERF (profile dir), BENCH_KEEP=1 (keep temp dir).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podtls/podtls/bench/harness"
	"github.com/podtls/podtls/internal/gobuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "handshake":
		err = handshakeCmd(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "memory":
		err = memoryCmd(ctx, os.Args[2:])
	default:
		err = benchCmd(ctx, os.Args[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil && ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "podtls-bench: interrupted; every process it started has been stopped")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podtls-bench:", err)
		var missing *harness.MissingToolsError
		if errors.As(err, &missing) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

func benchCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("podtls-bench", flag.ContinueOnError)
	cfg := harness.Config{Out: os.Stdout}
	fs.DurationVar(&cfg.Duration, "duration", envDuration("BENCH_DURATION", 5*time.Second), "length of each measurement (whole seconds)")
	fs.IntVar(&cfg.Rounds, "rounds", envInt("BENCH_ROUNDS", 3), "interleaved rounds; the report shows medians")
	fs.IntVar(&cfg.Workers, "handshake-workers", envInt("BENCH_HS_WORKERS", 32), "goroutines of the handshake client")
	fs.StringVar(&cfg.Sidecar, "sidecar", os.Getenv("BENCH_SIDECAR"), "prebuilt podtls-sidecar (default: go build ./sidecar/cmd/podtls-sidecar)")
	fs.BoolVar(&cfg.NoSidecar, "no-sidecar", os.Getenv("BENCH_NO_SIDECAR") == "1", "measure direct and nginx only")
	fs.BoolVar(&cfg.NoPin, "no-pin", os.Getenv("BENCH_NO_PIN") == "1", "do not pin processes to CPUs with taskset")
	defNice := 0
	if os.Geteuid() == 0 {
		defNice = -10
	}
	fs.IntVar(&cfg.Nice, "nice", envInt("BENCH_NICE", defNice), "nice value of every benchmark process (negative needs root; 0: leave alone)")
	fs.BoolVar(&cfg.RealTime, "realtime", os.Getenv("BENCH_REALTIME") == "1", "run servers and load generators SCHED_FIFO (root; for busy machines, starves other work)")
	fs.StringVar(&cfg.PerfDir, "perf", os.Getenv("BENCH_PERF"), "write perf record profiles of the proxies (round 1) into this directory")
	fs.StringVar(&cfg.JSONOutput, "json", os.Getenv("BENCH_JSON"), "also write the raw results as JSON to this file")
	fs.BoolVar(&cfg.KeepTmp, "keep", os.Getenv("BENCH_KEEP") == "1", "keep the temp dir with configs and logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	root, err := gobuild.RepoRoot()
	if err != nil {
		return err
	}
	cfg.RepoRoot = root
	if cfg.Self, err = os.Executable(); err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	return harness.Run(ctx, cfg)
}

func memoryCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("podtls-bench memory", flag.ContinueOnError)
	cfg := harness.MemoryConfig{Out: os.Stdout}
	steps := fs.String("steps", envString("BENCH_MEM_STEPS", "250,500,1000,2000"), "open-connection counts measured, ascending")
	fs.IntVar(&cfg.Runs, "runs", envInt("BENCH_MEM_RUNS", 3), "runs (a fresh sidecar per run and phase); the report shows medians")
	fs.DurationVar(&cfg.Active, "active", envDuration("BENCH_MEM_ACTIVE", 2*time.Second), "transfer time of every connection at each active step")
	fs.StringVar(&cfg.Sidecar, "sidecar", os.Getenv("BENCH_SIDECAR"), "prebuilt podtls-sidecar (default: go build ./sidecar/cmd/podtls-sidecar)")
	fs.StringVar(&cfg.JSONOutput, "json", os.Getenv("BENCH_MEM_JSON"), "also write the raw results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(*steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-steps %q: %w", *steps, err)
		}
		cfg.Steps = append(cfg.Steps, n)
	}
	root, err := gobuild.RepoRoot()
	if err != nil {
		return err
	}
	cfg.RepoRoot = root
	return harness.RunMemory(ctx, cfg)
}

func envString(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func handshakeCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("handshake", flag.ContinueOnError)
	addr := fs.String("addr", "", "server host:port")
	name := fs.String("server-name", "", "TLS server name (SNI)")
	ca := fs.String("ca", "", "PEM roots to verify the server with")
	cert := fs.String("cert", "", "client certificate chain (PEM), for mTLS")
	key := fs.String("key", "", "client key (PEM)")
	workers := fs.Int("c", 32, "concurrent connections")
	d := fs.Duration("d", 5*time.Second, "duration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *name == "" || *ca == "" {
		return errors.New("handshake: -addr, -server-name and -ca are required")
	}
	return harness.HandshakeMain(ctx, *addr, *name, *ca, *cert, *key, *workers, *d, os.Stdout)
}

func envDuration(key string, def time.Duration) time.Duration {
	if v := os.Getenv(key); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		fmt.Fprintf(os.Stderr, "podtls-bench: ignoring %s=%q: not a duration\n", key, v)
	}
	return def
}

func envInt(key string, def int) int {
	if v := os.Getenv(key); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		fmt.Fprintf(os.Stderr, "podtls-bench: ignoring %s=%q: not an integer\n", key, v)
	}
	return def
}
