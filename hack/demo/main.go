// Command demo is `make demo`: the customer -> preference -> recommendation scenario
// on a real single-node Kubernetes started on this machine (see e2e/demo, which CI runs
// as a test). Needs root (the node runs kubelet, containerd and runc).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/podtls/podtls/e2e/demo"
)

func main() {
	keep := flag.Bool("keep", false, "leave everything running at the end (tear down with Ctrl-C)")
	verbose := flag.Bool("v", false, "log the cluster's progress")
	acme := flag.String("acme", "auto", "the public edge with an ACME certificate from Pebble: auto (when BIND9 and Pebble are installed), on, off")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	mode, ok := map[string]demo.ACMEMode{"auto": demo.ACMEAuto, "on": demo.ACMERequired, "off": demo.ACMEOff}[*acme]
	if !ok {
		fmt.Fprintf(os.Stderr, "-acme %q: want auto, on or off\n", *acme)
		os.Exit(2)
	}
	if _, err := demo.Run(ctx, demo.Options{Keep: *keep, Logger: log, ACME: mode}, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		stop()
		os.Exit(1)
	}
}
