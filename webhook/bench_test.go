package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

// servingCert writes a self-signed ECDSA certificate for 127.0.0.1 into dir as
// tls.crt/tls.key and returns a pool trusting it.
func servingCert(b *testing.B, dir string) *x509.CertPool {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// BenchmarkAdmissionHTTPS measures full admissions (AdmissionReview over HTTPS
// with keep-alive, decode, inject, patch, encode) against controller-runtime's
// webhook server, with 8 concurrent clients like an API server under load
// (target: >= 2000 admissions/s).
func BenchmarkAdmissionHTTPS(b *testing.B) {
	dir := b.TempDir()
	pool := servingCert(b, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()

	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir})
	h := testHandler(b)
	Register(srv, h.Namespaces, nil, h.Config)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	b.Cleanup(func() { cancel(); <-done })

	req := podRequest(b, "demo", newPod(map[string]string{
		contract.Inbound: "8443:8080", contract.Upstreams: "recommendation.demo.svc:8443@9001"}))
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest})
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections) // registered last, runs before the server stops
	url := "https://127.0.0.1:" + strconv.Itoa(port) + webhookconfig.PathLabelled
	post := func() error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
			return err
		}
		if review.Response == nil || !review.Response.Allowed || len(review.Response.Patch) == 0 {
			return errNotInjected
		}
		return nil
	}
	poll.Eventually(b, 10*time.Second, "the webhook server to start", func() (bool, string) {
		if err := post(); err != nil {
			return false, err.Error()
		}
		return true, ""
	})

	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	work := make(chan struct{}, clients)
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if err := post(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "admissions/s")
	// CPU per admission, client and server together: unlike wall-clock
	// throughput it does not depend on what else runs on the machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/admission")
}

var errNotInjected = errors.New("admission response without a patch")

// cpuTime is the user+system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandle measures one admission inside the handler (decode, decide,
// inject, patch), without HTTP and TLS.
func BenchmarkHandle(b *testing.B) {
	h := testHandler(b)
	req := podRequest(b, "demo", newPod(map[string]string{
		contract.Inbound: "8443:8080", contract.Upstreams: "recommendation.demo.svc:8443@9001"}))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(ctx, req); len(resp.Patches) == 0 {
			b.Fatal("not injected")
		}
	}
}
