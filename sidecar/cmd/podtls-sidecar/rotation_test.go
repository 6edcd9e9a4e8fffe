package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// TestRotationUnderLoad replaces the served certificate 20+ times with
// kubelet's ..data symlink swap while clients keep sending requests over new
// and kept-alive connections: no request may fail, and a new handshake must
// see each new serial within a second.
func TestRotationUnderLoad(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	dir := p.certDir(t, "server", p.serverLeaf(t))
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr, "--cert-dir", dir, "--trust-bundle", p.caFile, "--allow", clientID)
	cfg := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var okCount, failCount atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failCount.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	var wg sync.WaitGroup
	// The load is mostly kept-alive requests: full handshakes from several
	// workers would saturate a small machine and measure its run queue, not
	// the reload.
	for range 1 { // a new connection (full handshake) per request
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				body, _, err := httpGet(ctx, inbound, cfg)
				switch {
				case ctx.Err() != nil:
				case err != nil:
					fail(err)
				case !strings.Contains(body, "hello from backend"):
					fail(fmt.Errorf("unexpected body %q", body))
				default:
					okCount.Add(1)
				}
			}
		}()
	}
	for range 3 { // kept-alive connections opened before a swap keep working
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: cfg.Clone(), MaxIdleConnsPerHost: 1,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "tcp", inbound)
				}}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://server.demo.svc/", nil)
				resp, err := c.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					fail(err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					fail(fmt.Errorf("status %d", resp.StatusCode))
					continue
				}
				okCount.Add(1)
			}
		}()
	}

	swaps := 0
	var worst time.Duration
	for swaps < 20 || okCount.Load() < 2000 {
		if swaps > 300 {
			t.Fatalf("only %d requests after %d swaps", okCount.Load(), swaps)
		}
		leaf := p.serverLeaf(t)
		want := leaf.Cert.SerialNumber.Text(16)
		start := testpki.KubeletWrite(t, dir, map[string][]byte{"tls.crt": leaf.ChainPEM, "tls.key": leaf.KeyPEM})
		// A handshake that starts within 1s of the swap must show the new
		// serial (measured at the start: on a loaded machine the handshake
		// itself can take a while).
		poll.Eventually(t, 30*time.Second, fmt.Sprintf("swap %d: serial %s served", swaps, want), func() (bool, string) {
			probeStart := time.Now()
			_, serial, err := httpGet(ctx, inbound, cfg)
			if err == nil && serial == want {
				worst = max(worst, probeStart.Sub(start))
				return true, ""
			}
			if probeStart.Sub(start) > time.Second {
				t.Fatalf("swap %d: a handshake started %s after the swap still showed serial %s, not %s (err %v)", swaps, probeStart.Sub(start).Round(time.Millisecond), serial, want, err)
			}
			return false, fmt.Sprintf("serial %s, err %v", serial, err)
		})
		swaps++
		// Let the load use the new certificate before the next swap.
		served := okCount.Load()
		poll.Eventually(t, 30*time.Second, "requests after the swap", func() (bool, string) {
			return okCount.Load() > served || failCount.Load() > 0, "no request completed since the swap"
		})
	}
	cancel()
	wg.Wait()
	if n := failCount.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", n, n+okCount.Load(), firstErr.Load())
	}
	t.Logf("%d requests, %d swaps, zero failures; new serial served to handshakes started at most %s after a swap", okCount.Load(), swaps, worst.Round(time.Millisecond))
	if m := sc.metric(t, `podtls_sidecar_cert_reloads_total{cert="mesh",result="success"}`); !strings.HasSuffix(m, fmt.Sprint(" ", swaps+1)) {
		t.Errorf("reload metric %q, want %d successes", m, swaps+1)
	}
	if m := sc.metric(t, `podtls_sidecar_cert_reloads_total{cert="mesh",result="failure"}`); m != "" {
		t.Errorf("a rotation was counted as a failed reload: %s", m)
	}
}

// TestCorruptFilesKeepServing: a half-written or corrupt update never
// replaces the certificate in service.
func TestCorruptFilesKeepServing(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	first := p.serverLeaf(t)
	dir := p.certDir(t, "server", first)
	// The in-place write below changes a file behind the ..data symlink,
	// which no directory event reports: the content poll must catch it.
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr, "--cert-dir", dir, "--trust-bundle", p.caFile, "--poll-interval", "200ms")
	cfg := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")
	want := first.Cert.SerialNumber.Text(16)
	next := p.serverLeaf(t)
	updates := []struct {
		name  string
		apply func(t *testing.T)
	}{
		{"half-written-in-place", func(t *testing.T) {
			// A writer that is not atomic: truncated certificate, old key.
			path := filepath.Join(dir, "..data", "tls.crt")
			if err := os.WriteFile(path, next.ChainPEM[:len(next.ChainPEM)/2], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"new-cert-old-key", func(t *testing.T) {
			testpki.KubeletWrite(t, dir, map[string][]byte{"tls.crt": next.ChainPEM, "tls.key": first.KeyPEM})
		}},
		{"garbage", func(t *testing.T) {
			testpki.KubeletWrite(t, dir, map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\nnot base64!\n"), "tls.key": []byte{0xff}})
		}},
		{"empty", func(t *testing.T) {
			testpki.KubeletWrite(t, dir, map[string][]byte{"tls.crt": nil, "tls.key": nil})
		}},
	}
	for i, u := range updates {
		t.Run(u.name, func(t *testing.T) {
			u.apply(t)
			// The sidecar has read the update (after the debounce or a poll)
			// once it counts the failed reload.
			poll.Eventually(t, 15*time.Second, "the failed reload to be counted", func() (bool, string) {
				n := sc.counter(t, `podtls_sidecar_cert_reloads_total{cert="mesh",result="failure"}`)
				return n >= float64(i+1), fmt.Sprintf("%v failed reloads counted, want %d", n, i+1)
			})
			body, serial, err := httpGet(context.Background(), inbound, cfg)
			if err != nil || !strings.Contains(body, "hello from backend") {
				t.Fatalf("request after corrupt update: %v %q", err, body)
			}
			if serial != want {
				t.Fatalf("serving serial %s, want the previous %s", serial, want)
			}
			m := sc.metric(t, `podtls_sidecar_cert_reloads_total{cert="mesh",result="failure"}`)
			if !strings.HasSuffix(m, fmt.Sprint(" ", i+1)) {
				t.Fatalf("failure metric %q, want %d", m, i+1)
			}
		})
	}
	if code, _ := sc.get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d after corrupt updates, want 200 (the old certificate is still valid)", code)
	}
}

// TestDrainOnSIGTERM: SIGTERM closes the listeners and turns /readyz off at
// once, while open connections keep working until the drain timeout.
func TestDrainOnSIGTERM(t *testing.T) {
	p := newPKI(t)
	app := newBackend(t)
	inbound := freeAddr(t)
	sc := startSidecar(t, nil, "--inbound", inbound+"="+app.addr, "--cert-dir", p.certDir(t, "server", p.serverLeaf(t)),
		"--trust-bundle", p.caFile, "--drain-timeout", "1500ms")
	cfg := goClient(p, p.ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), "server.demo.svc")
	conn, err := tls.Dial("tcp", inbound, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	roundTrip := func() error {
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := roundTrip(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The sidecar logs "draining" once it has stopped reporting ready; it
	// closes the listeners right after.
	sc.waitLog(t, `"msg":"draining"`)
	if code, _ := sc.get("/readyz"); code == 200 {
		t.Error("/readyz still 200 while draining")
	}
	poll.Eventually(t, 200*time.Millisecond, "the listener to be closed after SIGTERM", func() (bool, string) {
		c, err := net.DialTimeout("tcp", inbound, time.Second)
		if err == nil {
			c.Close()
			return false, "listener still accepts after SIGTERM"
		}
		return true, ""
	})
	if err := roundTrip(); err != nil {
		t.Fatalf("open connection broken during drain: %v", err)
	}
	select {
	case err := <-sc.done:
		sc.done <- err
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		if d := time.Since(start); d < time.Second || d > 5*time.Second {
			t.Fatalf("exited after %s, want about the 1.5s drain timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar did not exit after the drain timeout")
	}
	if err := roundTrip(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection should be closed after the drain, got %v", err)
	}
}
