package main

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/sidecar/exposure"
)

// TestPlaintextBypass runs the binary with POD_IP set in front of two apps:
// one bound to 0.0.0.0 (its plaintext port is reachable on the pod IP) and
// one bound to 127.0.0.1. /plaintext, the gauge and the log tell them apart.
func TestPlaintextBypass(t *testing.T) {
	p := newPKI(t)
	exposedApp, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer exposedApp.Close()
	exposedPort := exposedApp.Addr().(*net.TCPAddr).Port
	safe := newBackend(t)
	// 127.0.0.2 plays the pod IP: a local address the loopback-bound app
	// does not accept connections on, as it would not on a real pod IP.
	sc := startSidecar(t, []string{"POD_IP=127.0.0.2", "POD_IPS="},
		"--inbound", freeAddr(t)+"=127.0.0.1:"+strconv.Itoa(exposedPort),
		"--inbound", freeAddr(t)+"="+safe.addr,
		"--cert-dir", p.certDir(t, "server", p.serverLeaf(t)), "--trust-bundle", p.caFile)

	var rep exposure.Report
	poll.Eventually(t, 15*time.Second, "the first plaintext check", func() (bool, string) {
		code, body := sc.get("/plaintext")
		if code != 200 {
			return false, body
		}
		rep = exposure.Report{}
		if err := json.Unmarshal([]byte(body), &rep); err != nil {
			return false, err.Error()
		}
		return !rep.CheckedAt.IsZero(), body
	})
	byPort := map[int]exposure.Port{}
	for _, pt := range rep.Ports {
		byPort[pt.Port] = pt
	}
	safePort, _ := strconv.Atoi(portOf(safe.addr))
	if !rep.Enabled || !byPort[exposedPort].Exposed || byPort[safePort].Exposed || len(rep.Ports) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	if m := sc.metric(t, `podtls_sidecar_plaintext_exposed{port="`+strconv.Itoa(exposedPort)+`"}`); !strings.HasSuffix(m, " 1") {
		t.Fatalf("gauge of the exposed port: %q", m)
	}
	if m := sc.metric(t, `podtls_sidecar_plaintext_exposed{port="`+strconv.Itoa(safePort)+`"}`); !strings.HasSuffix(m, " 0") {
		t.Fatalf("gauge of the loopback port: %q", m)
	}
	if log := sc.stderr.String(); !strings.Contains(log, "bind the app to 127.0.0.1:"+strconv.Itoa(exposedPort)) {
		t.Fatalf("no warning naming the fix:\n%s", log)
	}
}
