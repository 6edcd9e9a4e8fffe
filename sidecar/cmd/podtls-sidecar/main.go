// Command podtls-sidecar terminates inbound TLS/mTLS, originates outbound
// mTLS and reloads certificates without restarts. See docs/sidecar.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/podtls/podtls/sidecar/options"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "wait-ready":
			os.Exit(waitReadyMain(os.Args[2:], os.Stderr))
		case "wait-idle":
			os.Exit(waitIdleMain(os.Args[2:], os.Stderr))
		case "renew":
			os.Exit(renewMain(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	cfg, err := options.Parse(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "podtls-sidecar: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, newLogger(cfg)); err != nil {
		fmt.Fprintf(os.Stderr, "podtls-sidecar: %v\n", err)
		stop()
		os.Exit(1)
	}
}
