package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// TestAccessLog: --access-log writes one JSON line per request to stdout,
// apart from the sidecar's own log on stderr, and never the query string.
func TestAccessLog(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--mode", "http", "--access-log", "--inbound", inbound+"="+app.addr,
		"--cert-dir", p.certDir(t, "server", p.serverLeaf(t)), "--trust-bundle", p.caFile)
	cfg := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	res, err := hc.Get("https://" + inbound + "/orders?token=s3cret")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !strings.Contains(string(body), "hello from backend") {
		t.Fatalf("GET through the sidecar: %q, %v", body, err)
	}
	var line map[string]any
	poll.Eventually(t, 10*time.Second, "an access log line on stdout", func() (bool, string) {
		out := sc.stdout.String()
		first, _, ok := strings.Cut(out, "\n")
		if !ok {
			return false, "stdout: " + out
		}
		if err := json.Unmarshal([]byte(first), &line); err != nil {
			t.Fatalf("stdout line %q: %v", first, err)
		}
		return true, ""
	})
	if line["msg"] != "request" || line["path"] != "/orders" || line["status"] != 200.0 || line["peer"] != clientID {
		t.Fatalf("access log line %v", line)
	}
	if out := sc.stdout.String(); strings.Contains(out, "s3cret") {
		t.Fatalf("the query string reached the access log: %s", out)
	}
	if strings.Contains(sc.stderr.String(), `"msg":"request"`) {
		t.Fatal("access log lines on stderr, want them on stdout only")
	}
}
