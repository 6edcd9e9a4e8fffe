package discovery_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/ca"
	caserver "github.com/podtls/podtls/ca/server"
	"github.com/podtls/podtls/discovery"
	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/internal/kubetest"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

// refuseTokens is an Authenticator for a server whose sign API is not under test.
type refuseTokens struct{}

func (refuseTokens) Authenticate(context.Context, string) (ca.Caller, error) {
	return ca.Caller{}, fmt.Errorf("%w: not in this test", caserver.ErrUnauthenticated)
}

func endpointSlice(name string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "preference"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To[int32](9443), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// TestDiscoveryEnvtest serves discovery from an informer cache of a real API
// server through the CA's HTTPS server, over mutual TLS.
func TestDiscoveryEnvtest(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	env.CreateNamespace(t, "demo", nil)
	kube := env.Client
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "preference"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "https", Port: 8443, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP},
		}},
	}
	web0 := discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: "preference-0"}}
	web1 := discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
	// 10.0.0.1 in a second slice too, as while the EndpointSlice controller moves it.
	moving := web0
	moving.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false)}
	for _, obj := range []client.Object{svc, endpointSlice("preference-a", web0, web1), endpointSlice("preference-b", moving)} {
		if err := kube.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	cache, err := crcache.New(env.Config, crcache.Options{ByObject: map[client.Object]crcache.ByObject{
		&discoveryv1.EndpointSlice{}: {Transform: discovery.TransformEndpointSlice},
	}})
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	src, err := discovery.New(serveCtx, cache)
	if err != nil {
		t.Fatal(err)
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- cache.Start(serveCtx) }()
	defer func() {
		stopServing()
		if err := <-cacheDone; err != nil {
			t.Errorf("cache: %v", err)
		}
	}()
	if !cache.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}

	mat, err := ca.Generate(time.Now(), ca.Backdate)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(mat, ca.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	handler, err := discovery.NewHandler(discovery.HandlerOptions{Source: src, TrustDomain: authority.TrustDomain(),
		TrustPool: authority.TrustPool, Logger: slog.New(slog.DiscardHandler), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := caserver.New(caserver.Options{Listener: ln, Authority: authority, Authenticator: refuseTokens{},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Logger: slog.New(slog.DiscardHandler), Discovery: handler})
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Start(serveCtx) }()
	defer func() {
		stopServing()
		if err := <-srvDone; err != nil {
			t.Errorf("CA server: %v", err)
		}
	}()

	meshCA := &testpki.CA{Cert: mat.Intermediate, Key: mat.Key, Chain: []*x509.Certificate{mat.Intermediate}}
	roots := authority.TrustPool()
	clientWith := func(l *testpki.Leaf) *http.Client {
		cfg := &tls.Config{RootCAs: roots}
		if l != nil {
			pair, err := tls.X509KeyPair(l.ChainPEM, l.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c := &http.Client{Timeout: 70 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
		t.Cleanup(c.CloseIdleConnections)
		return c
	}
	customer := clientWith(meshCA.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/shop/sa/customer"}))
	base := "https://" + ln.Addr().String() + discoveryapi.EndpointsPath
	get := func(c *http.Client, q url.Values) (int, []byte, error) {
		resp, err := c.Get(base + "?" + q.Encode())
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	endpoints := func(q url.Values) discoveryapi.Endpoints {
		t.Helper()
		code, body, err := get(customer, q)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %s %v", q.Encode(), code, body, err)
		}
		var ans discoveryapi.Endpoints
		if err := json.Unmarshal(body, &ans); err != nil {
			t.Fatal(err)
		}
		return ans
	}
	query := func(host, port string, kv ...string) url.Values {
		q := url.Values{"host": {host}, "port": {port}}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q
	}

	first := endpoints(query("preference.demo.svc", "8443"))
	want := []discoveryapi.Endpoint{
		{Address: "10.0.0.1", Port: 9443, Pod: "preference-0", Ready: true, Serving: true},
		{Address: "10.0.0.2", Port: 9443, Ready: true, Serving: true},
	}
	if fmt.Sprint(first.Endpoints) != fmt.Sprint(want) || first.Service != "preference.demo.svc" || first.Port != 8443 {
		t.Fatalf("answer %+v, want endpoints %+v", first, want)
	}

	t.Run("long poll returns when a slice changes", func(t *testing.T) {
		type result struct {
			code int
			body []byte
			err  error
		}
		done := make(chan result, 1)
		go func() {
			code, body, err := get(customer, query("preference.demo.svc.cluster.local", "8443", "version", first.Version, "wait", "45s"))
			done <- result{code, body, err}
		}()
		poll.Eventually(t, 10*time.Second, "the long poll to wait", func() (bool, string) {
			n := waiting(t, reg)
			return n == 1, fmt.Sprintf("%v waiting", n)
		})
		start := time.Now()
		var s discoveryv1.EndpointSlice
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "preference-a"}, &s); err != nil {
			t.Fatal(err)
		}
		s.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
		if err := kube.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("long poll: %d %s %v", r.code, r.body, r.err)
		}
		var ans discoveryapi.Endpoints
		if err := json.Unmarshal(r.body, &ans); err != nil {
			t.Fatal(err)
		}
		if ans.Version == first.Version || len(ans.Endpoints) != 2 || ans.Endpoints[1].Ready || !ans.Endpoints[1].Terminating {
			t.Fatalf("after the change: %+v", ans)
		}
		t.Logf("long poll answered %s after the update", time.Since(start))
	})

	t.Run("status codes", func(t *testing.T) {
		otherTD := meshCA.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://other.example/ns/shop/sa/customer"})
		for _, tt := range []struct {
			name   string
			client *http.Client
			q      url.Values
			want   int
		}{
			{"short name of the caller's namespace", customer, query("preference", "8443"), http.StatusNotFound},
			{"unknown service", customer, query("nothing.demo.svc", "8443"), http.StatusNotFound},
			{"unknown port", customer, query("preference.demo.svc", "443"), http.StatusNotFound},
			{"other port", customer, query("preference.demo.svc", "9090"), http.StatusOK},
			{"malformed port", customer, query("preference.demo.svc", "https"), http.StatusBadRequest},
			{"no client certificate", clientWith(nil), query("preference.demo.svc", "8443"), http.StatusUnauthorized},
			{"trust domain of another mesh", clientWith(otherTD), query("preference.demo.svc", "8443"), http.StatusUnauthorized},
		} {
			t.Run(tt.name, func(t *testing.T) {
				code, body, err := get(tt.client, tt.q)
				if err != nil || code != tt.want {
					t.Fatalf("%d %s %v, want %d", code, body, err, tt.want)
				}
				var e discoveryapi.Error
				if code != http.StatusOK && (json.Unmarshal(body, &e) != nil || e.Error == "") {
					t.Errorf("error body %s", body)
				}
			})
		}
		// A certificate of another CA does not get past the handshake.
		foreign := testpki.NewCA(t, "foreign").Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/shop/sa/customer"})
		if _, _, err := get(clientWith(foreign), query("preference.demo.svc", "8443")); err == nil {
			t.Fatal("certificate of another CA: served")
		}
		pair, err := tls.X509KeyPair(foreign.ChainPEM, foreign.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}})
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("certificate of another CA: %v, want a refused handshake", err)
		}
	})

	// Last: stopping the server answers waiting long polls at once, so its
	// graceful shutdown does not wait them out (nor fail after its grace).
	t.Run("shutdown ends long polls", func(t *testing.T) {
		current := endpoints(query("preference.demo.svc", "8443"))
		done := make(chan int, 1)
		go func() {
			code, _, _ := get(customer, query("preference.demo.svc", "8443", "version", current.Version, "wait", "60s"))
			done <- code
		}()
		poll.Eventually(t, 10*time.Second, "the long poll to wait", func() (bool, string) {
			n := waiting(t, reg)
			return n == 1, fmt.Sprintf("%v waiting", n)
		})
		stopServing()
		if code := <-done; code != http.StatusOK {
			t.Fatalf("long poll during shutdown: %d", code)
		}
	})
}

// waiting reads the waiting-requests gauge from reg.
func waiting(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "podtls_discovery_waiting_requests" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
