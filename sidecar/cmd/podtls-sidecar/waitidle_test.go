package main

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/podtls/podtls/internal/testpki"
)

// TestWaitIdle: the legacy-placement preStop hook holds while a connection
// is open (here it gives up at its timeout and says why) and returns once
// the connections have ended.
func TestWaitIdle(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr, "--cert-dir", p.certDir(t, "server", p.serverLeaf(t)),
		"--trust-bundle", p.caFile)
	if out, err := runCmd(t, "", binary, "wait-idle", "--admin", sc.admin, "--timeout", "5s", "--quiet", "100ms"); err != nil {
		t.Fatalf("wait-idle without connections: %v %s", err, out)
	}
	conn, err := tls.Dial("tcp", inbound, goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc"))
	if err != nil {
		t.Fatal(err)
	}
	before := sc.counter(t, inboundTotal)
	out, err := runCmd(t, "", binary, "wait-idle", "--admin", sc.admin, "--timeout", "700ms")
	if err == nil || !strings.Contains(out, "1 connection") {
		t.Fatalf("wait-idle with an open connection: %v %q; want a timeout naming 1 connection", err, out)
	}
	conn.Close()
	sc.waitHandled(t, before-1)
	if out, err := runCmd(t, "", binary, "wait-idle", "--admin", sc.admin, "--timeout", "5s", "--quiet", "100ms"); err != nil {
		t.Fatalf("wait-idle after the connection ended: %v %s", err, out)
	}
}
