package server

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
)

// benchParallelism is the number of client goroutines per core in the HTTP
// benchmark: several requests in flight per core, as many pods would send, so
// a round trip's network wait does not leave the cores idle.
const benchParallelism = 4

// BenchmarkSign compares signatures per second through the HTTP API with raw
// x509.CreateCertificate for the same key type (ECDSA P-256 leaf key, P-256
// intermediate), side by side in one run:
//
//   - raw-x509: x509.CreateCertificate of an equivalent leaf template.
//   - authority: ca.Authority.Sign in process (PEM CSR parse, signature check,
//     policy, signing, PEM chain), no HTTP.
//   - http-api: the real Server over real TLS 1.3 on loopback with keep-alive
//     connections, JSON both ways, and the real TokenReviewAuthenticator in
//     front of a fake TokenReview client that is called once, so every
//     measured request takes the cached-token path. The client runs in this
//     process, so its TLS and JSON work counts against the API.
//   - http-api-server-cpu: the same server, the client in a separate process
//     (as pods would be; it still shares the cores): sig/cpu-s and cpu-ratio
//     are the server's own cost per signature.
//   - interleaved: raw and in-process HTTP batches alternating, so a load
//     change from other processes hits both alike.
//
// Each sub-benchmark reports sig/s (wall clock) and sig/cpu-s (per second of
// this process's CPU time, which other load on the machine does not distort).
// authority and http-api also report ratio (wall) and cpu-ratio against the
// raw-x509 run just before; the target is ratio >= 0.5.
func BenchmarkSign(b *testing.B) {
	a := testAuthority(b, nil)
	csr := newCSR(b, "web.demo.svc")
	blk, _ := pem.Decode([]byte(csr))
	parsed, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	var raw result
	m := a.Material()
	id, _ := url.Parse("spiffe://cluster.local/ns/demo/sa/web")
	rawOp := func() error {
		now := time.Now()
		tmpl := &x509.Certificate{
			DNSNames:    []string{"web.demo.svc"},
			URIs:        []*url.URL{id},
			NotBefore:   now.Add(-time.Minute),
			NotAfter:    now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		_, err := x509.CreateCertificate(rand.Reader, tmpl, m.Intermediate, parsed.PublicKey, m.Key)
		return err
	}

	b.Run("raw-x509", func(b *testing.B) {
		raw = measure(b, rawOp, 1)
	})

	b.Run("authority", func(b *testing.B) {
		caller := ca.Caller{Namespace: "demo", ServiceAccount: "web", PodName: "web-0"}
		r := measure(b, func() error {
			_, err := a.Sign(b.Context(), caller, []byte(csr), 24*time.Hour)
			return err
		}, 1)
		r.reportRatio(b, raw)
	})

	// One server and client for all runs of http-api, so connections stay warm.
	token := jwtWithExp(time.Now().Add(time.Hour))
	reviews := &fakeReviews{status: map[string]authnv1.TokenReviewStatus{
		token: okStatus("system:serviceaccount:demo:web", signapi.Audience),
	}}
	ts := startServer(b, Options{
		Authority:     a,
		Authenticator: NewTokenReviewAuthenticator(reviews, TokenReviewOptions{}),
		Rate:          rate.Inf,
	})
	// HTTP/1.1 keep-alive, one connection per client goroutine.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: a.TrustPool(), MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 256,
	}}
	b.Cleanup(client.CloseIdleConnections)
	body := signBody(b, csr, "24h")
	post := func() error {
		req, err := http.NewRequest(http.MethodPost, ts.url+signapi.SignPath, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	// Warm up outside the timer: one TLS handshake per client goroutine and
	// the single token review.
	var wg sync.WaitGroup
	for range benchParallelism * 4 {
		wg.Go(func() {
			if err := post(); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()

	b.Run("http-api", func(b *testing.B) {
		r := measure(b, post, benchParallelism)
		r.reportRatio(b, raw)
		if reviews.calls != 1 {
			b.Errorf("%d token reviews, want 1 (cached path)", reviews.calls)
		}
	})

	// The client in a separate process: this process's CPU time is then the
	// server's alone, the CA's cost per signature (cpu-ratio).
	b.Run("http-api-server-cpu", func(b *testing.B) {
		dir := b.TempDir()
		bundle, bodyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "body.json")
		if err := os.WriteFile(bundle, a.TrustBundlePEM(), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchClientProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"PODTLS_BENCH_URL="+ts.url+signapi.SignPath, "PODTLS_BENCH_TOKEN="+token,
			"PODTLS_BENCH_BUNDLE="+bundle, "PODTLS_BENCH_BODY="+bodyFile,
			fmt.Sprintf("PODTLS_BENCH_N=%d", b.N), fmt.Sprintf("PODTLS_BENCH_WORKERS=%d", runtime.GOMAXPROCS(0)*benchParallelism))
		b.ResetTimer()
		cpu0 := processCPU(b)
		out, err := cmd.CombinedOutput()
		cpu := float64(processCPU(b)-cpu0) / float64(b.N)
		if err != nil {
			b.Fatalf("client process: %v\n%s", err, out)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
		b.ReportMetric(1e9/cpu, "sig/cpu-s")
		if raw.cpuPerOp > 0 {
			// Wall clock includes the client process's start (a few ms).
			b.ReportMetric(raw.nsPerOp/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "ratio")
			b.ReportMetric(raw.cpuPerOp/cpu, "cpu-ratio")
		}
	})

	// The same comparison with raw and HTTP batches alternating, so load
	// from other processes hits both sides alike: the ratio to quote.
	b.Run("interleaved", func(b *testing.B) {
		var rawTime, httpTime time.Duration
		const batch = 32
		for range b.N {
			rawTime += runBatch(b, rawOp, batch, runtime.GOMAXPROCS(0))
			httpTime += runBatch(b, post, batch, runtime.GOMAXPROCS(0)*benchParallelism)
		}
		ops := float64(b.N * batch)
		b.ReportMetric(ops/rawTime.Seconds(), "raw-sig/s")
		b.ReportMetric(ops/httpTime.Seconds(), "http-sig/s")
		b.ReportMetric(rawTime.Seconds()/httpTime.Seconds(), "ratio")
	})
}

// TestBenchClientProcess is the client of BenchmarkSign/http-api-server-cpu,
// run in its own process; it does nothing in a normal test run.
func TestBenchClientProcess(t *testing.T) {
	url := os.Getenv("PODTLS_BENCH_URL")
	if url == "" {
		t.Skip("only run by BenchmarkSign")
	}
	bundle, err := os.ReadFile(os.Getenv("PODTLS_BENCH_BUNDLE"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(os.Getenv("PODTLS_BENCH_BODY"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(os.Getenv("PODTLS_BENCH_N"))
	if err != nil {
		t.Fatal(err)
	}
	workers, err := strconv.Atoi(os.Getenv("PODTLS_BENCH_WORKERS"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: workers,
	}}
	token := os.Getenv("PODTLS_BENCH_TOKEN")
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("status %d, read %v", resp.StatusCode, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// runBatch runs op n times on workers goroutines and returns the wall time.
func runBatch(b *testing.B, op func() error, n, workers int) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

type result struct{ nsPerOp, cpuPerOp float64 }

// measure runs op b.N times on all cores and reports sig/s and sig/cpu-s.
func measure(b *testing.B, op func() error, parallelism int) result {
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	r := result{
		nsPerOp:  float64(b.Elapsed().Nanoseconds()) / float64(b.N),
		cpuPerOp: float64(processCPU(b)-cpu0) / float64(b.N),
	}
	b.ReportMetric(1e9/r.nsPerOp, "sig/s")
	b.ReportMetric(1e9/r.cpuPerOp, "sig/cpu-s")
	return r
}

// reportRatio reports this run's speed relative to raw: wall clock (ratio)
// and CPU time (cpu-ratio).
func (r result) reportRatio(b *testing.B, raw result) {
	if raw.nsPerOp == 0 {
		return // raw-x509 filtered out with -bench
	}
	b.ReportMetric(raw.nsPerOp/r.nsPerOp, "ratio")
	b.ReportMetric(raw.cpuPerOp/r.cpuPerOp, "cpu-ratio")
}

// processCPU is the user+system CPU time this process has used, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
