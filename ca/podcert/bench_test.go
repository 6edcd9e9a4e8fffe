package podcert_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
	certv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"

	caserver "github.com/podtls/podtls/ca/server"
	"github.com/podtls/podtls/ca/signapi"
)

// benchInFlight is how many requests the benchmark keeps open at once, like
// the kubelets of a node pool starting pods together.
const benchInFlight = 16

// BenchmarkPodCertificateRequests measures the signer through a real API
// server (envtest), next to raw signing in the same run:
//
//   - raw-x509: x509.CreateCertificate of an equivalent leaf (ECDSA P-256
//     leaf key, P-256 intermediate).
//   - agent-http: the agent's path in the same process: POST /v1/sign over
//     TLS 1.3 keep-alive with a pod-bound projected token (one real
//     TokenReview, then the cache), 16 in flight.
//   - through-api: each op creates a PodCertificateRequest as a kubelet
//     would (16 in flight) and ends when the signer's certificate is in its
//     status: the API server's admission and validation, the informer, the
//     pod lookup, the CA's policy and signing, and the status write.
//
// agent-http and through-api report issued/s, ratio (issued/s over raw-x509's sig/s just
// before) and p50-ms/p99-ms from create to the Issued condition seen by an
// informer. The API server and etcd share the machine's cores with the
// signer: the ratio is the cost of the whole path, not of podtls alone.
func BenchmarkPodCertificateRequests(b *testing.B) {
	e := startSigner(b)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stubReq := e.request(b, "template", key)
	csr, err := x509.ParseCertificateRequest(stubReq.Spec.StubPKCS10Request)
	if err != nil {
		b.Fatal(err)
	}
	id, _ := url.Parse("spiffe://cluster.local/ns/demo/sa/web")
	var rawRate float64
	b.Run("raw-x509", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			now := time.Now()
			tmpl := &x509.Certificate{DNSNames: []string{"web.demo.svc"}, URIs: []*url.URL{id},
				NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, e.mat.Intermediate, csr.PublicKey, e.mat.Key); err != nil {
				b.Fatal(err)
			}
		}
		rawRate = float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(rawRate, "sig/s")
	})

	b.Run("agent-http", func(b *testing.B) {
		benchAgent(b, e, rawRate)
	})

	// Issued requests as the informer sees them: the time, and a channel
	// closed for the request's waiter.
	var mu sync.Mutex
	issuedAt := map[string]time.Time{}
	waiters := map[string]chan struct{}{}
	inf, err := e.mgr.GetCache().GetInformer(b.Context(), &certv1.PodCertificateRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		r, ok := obj.(*certv1.PodCertificateRequest)
		if !ok || !meta.IsStatusConditionTrue(r.Status.Conditions, certv1.PodCertificateRequestConditionTypeIssued) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, seen := issuedAt[r.Name]; !seen {
			issuedAt[r.Name] = time.Now()
			if w := waiters[r.Name]; w != nil {
				close(w)
			}
		}
	}}); err != nil {
		b.Fatal(err)
	}

	round := 0
	b.Run("through-api", func(b *testing.B) {
		round++
		n := b.N
		created := make([]time.Time, n)
		names := make([]string, n)
		sem := make(chan struct{}, benchInFlight)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range n {
			names[i] = fmt.Sprintf("bench-%d-%d", round, i)
			done := make(chan struct{})
			mu.Lock()
			waiters[names[i]] = done
			mu.Unlock()
			sem <- struct{}{}
			r := stubReq.DeepCopy()
			r.Name = names[i]
			created[i] = time.Now()
			wg.Go(func() {
				defer func() { <-sem }()
				if err := e.kube.Create(b.Context(), r); err != nil {
					b.Error(err)
					return
				}
				select {
				case <-done:
				case <-b.Context().Done():
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		lat := make([]float64, 0, n)
		mu.Lock()
		for i, name := range names {
			lat = append(lat, float64(issuedAt[name].Sub(created[i]).Microseconds())/1000)
		}
		mu.Unlock()
		reportRates(b, float64(n)/elapsed.Seconds(), rawRate, lat)
	})
}

// benchAgent signs through the CA's HTTPS sign API as sidecar agents do.
func benchAgent(b *testing.B, e *signerEnv, rawRate float64) {
	token := e.env.Token(b, "demo", "web", signapi.Audience, time.Hour, e.pod)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := caserver.New(caserver.Options{Listener: ln, Authority: e.authority, DNSNames: []string{"localhost"}, Rate: rate.Inf,
		Authenticator: caserver.NewTokenReviewAuthenticator(e.env.Clientset.AuthenticationV1().TokenReviews(), caserver.TokenReviewOptions{}),
		Logger:        slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Start(b.Context()) }()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	body, _ := json.Marshal(signapi.SignRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), TTL: "1h"})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchInFlight,
		TLSClientConfig: &tls.Config{RootCAs: e.authority.TrustPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	b.Cleanup(client.CloseIdleConnections)
	url := "https://" + ln.Addr().String() + signapi.SignPath
	post := func() (time.Duration, error) {
		t0 := time.Now()
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("sign: status %d", resp.StatusCode)
		}
		return time.Since(t0), nil
	}
	for range 50 { // the server comes up, the token is reviewed once
		if _, err = post(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]float64, b.N)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range benchInFlight {
		wg.Go(func() {
			for i := range next {
				d, err := post()
				if err != nil {
					b.Error(err)
				}
				lat[i] = float64(d.Microseconds()) / 1000
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	reportRates(b, float64(b.N)/time.Since(start).Seconds(), rawRate, lat)
}

// reportRates reports issued/s, the ratio to raw signing and latency
// percentiles in milliseconds.
func reportRates(b *testing.B, rate, rawRate float64, lat []float64) {
	slices.Sort(lat)
	b.ReportMetric(rate, "issued/s")
	if rawRate > 0 {
		b.ReportMetric(rate/rawRate, "ratio")
	}
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
}
