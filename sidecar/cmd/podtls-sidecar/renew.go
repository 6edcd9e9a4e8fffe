package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/podtls/podtls/sidecar/admin"
)

// renewMain implements "podtls-sidecar renew": it asks the sidecar running in
// the same pod (over loopback, the only peers /renew accepts) to request a new
// mesh certificate now, and prints the new serial. Operators run it with
// kubectl exec POD -c podtls-sidecar -- /podtls-sidecar renew.
func renewMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("podtls-sidecar renew", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", "127.0.0.1:15000", "`ADDR` of the sidecar's admin server (a loopback address)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "podtls-sidecar renew: usage: renew [--admin ADDR] [--timeout DURATION]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := renew(ctx, "http://"+*addr+"/renew")
	if err != nil {
		fmt.Fprintf(stderr, "podtls-sidecar renew: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "renewed: serial %s, valid until %s\n", res.Serial, res.NotAfter.UTC().Format(time.RFC3339))
	return 0
}

func renew(ctx context.Context, url string) (*admin.RenewResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var out admin.RenewResponse
	if err := json.Unmarshal(body, &out); err != nil || out.Serial == "" {
		return nil, fmt.Errorf("decode answer of %s: %v: %q", url, err, body)
	}
	return &out, nil
}
