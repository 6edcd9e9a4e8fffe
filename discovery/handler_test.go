package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/internal/poll"
	"github.com/podtls/podtls/internal/testpki"
)

const callerID = "spiffe://cluster.local/ns/demo/sa/customer"

type handlerEnv struct {
	h      *Handler
	src    *Source
	kube   client.Client
	mesh   *testpki.CA
	caller []*x509.Certificate
}

func newHandlerEnv(t *testing.T, o HandlerOptions) *handlerEnv {
	t.Helper()
	mesh := testpki.NewCA(t, "mesh")
	svc := service(corev1.ServicePort{Name: "https", Port: 8443})
	s := slice("preference-abc", named("https", 9443), ep("10.0.0.1", conds(nil, nil, nil)))
	kube := fake.NewClientBuilder().WithObjects(svc, &s).Build()
	src := newSource(t.Context(), kube)
	pool := x509.NewCertPool()
	pool.AddCert(mesh.Cert)
	o.Source, o.TrustDomain, o.TrustPool = src, "cluster.local", func() *x509.CertPool { return pool }
	o.Logger = slog.New(slog.DiscardHandler)
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	return &handlerEnv{h: h, src: src, kube: kube, mesh: mesh,
		caller: []*x509.Certificate{mesh.Issue(t, testpki.LeafOptions{SPIFFEID: callerID}).Cert}}
}

// get calls the handler as a client holding chain would.
func (e *handlerEnv) get(ctx context.Context, chain []*x509.Certificate, query string) *httptest.ResponseRecorder {
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "https://ca"+discoveryapi.EndpointsPath+"?"+query, nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: chain}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func decode(t *testing.T, w *httptest.ResponseRecorder) discoveryapi.Endpoints {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var ans discoveryapi.Endpoints
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
		t.Fatal(err)
	}
	return ans
}

func TestHandlerStatus(t *testing.T) {
	e := newHandlerEnv(t, HandlerOptions{})
	foreign := testpki.NewCA(t, "foreign")
	otherTD := e.mesh.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://other.example/ns/demo/sa/customer"}).Cert
	noID := e.mesh.Issue(t, testpki.LeafOptions{DNSNames: []string{"customer.demo.svc"}}).Cert
	for _, tt := range []struct {
		name  string
		chain []*x509.Certificate
		query string
		want  int
	}{
		{"answer", e.caller, "host=preference.demo.svc&port=8443", http.StatusOK},
		{"short name in the caller's namespace", e.caller, "host=preference&port=8443", http.StatusOK},
		{"full name", e.caller, "host=preference.demo.svc.cluster.local&port=8443&wait=0s", http.StatusOK},
		{"no certificate", nil, "host=preference.demo.svc&port=8443", http.StatusUnauthorized},
		{"foreign CA", []*x509.Certificate{foreign.Issue(t, testpki.LeafOptions{SPIFFEID: callerID}).Cert}, "host=preference.demo.svc&port=8443", http.StatusUnauthorized},
		{"other trust domain", []*x509.Certificate{otherTD}, "host=preference.demo.svc&port=8443", http.StatusUnauthorized},
		{"no SPIFFE ID", []*x509.Certificate{noID}, "host=preference.demo.svc&port=8443", http.StatusUnauthorized},
		{"unknown service", e.caller, "host=nothing.demo.svc&port=8443", http.StatusNotFound},
		{"unknown port", e.caller, "host=preference.demo.svc&port=443", http.StatusNotFound},
		{"external host", e.caller, "host=shop.example.com&port=443", http.StatusNotFound},
		{"short name of another namespace", e.caller, "host=preference.shop&port=8443", http.StatusNotFound},
		{"bad port", e.caller, "host=preference.demo.svc&port=https", http.StatusBadRequest},
		{"bad wait", e.caller, "host=preference.demo.svc&port=8443&wait=forever", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := e.get(t.Context(), tt.chain, tt.query)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	r := httptest.NewRequest(http.MethodPost, "https://ca"+discoveryapi.EndpointsPath, nil)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d", w.Code)
	}
}

// waiting polls until the handler holds n long polls.
func (e *handlerEnv) waiting(t *testing.T, n int) {
	t.Helper()
	poll.Eventually(t, 5*time.Second, fmt.Sprintf("%d long polls", n), func() (bool, string) {
		e.h.mu.Lock()
		defer e.h.mu.Unlock()
		return e.h.waits == n, fmt.Sprintf("%d waiting", e.h.waits)
	})
}

func TestHandlerLongPoll(t *testing.T) {
	e := newHandlerEnv(t, HandlerOptions{MaxWaitsPerCaller: 1})
	first := decode(t, e.get(t.Context(), e.caller, "host=preference.demo.svc&port=8443"))
	if len(first.Endpoints) != 1 || !first.Endpoints[0].Ready {
		t.Fatalf("first answer %+v", first)
	}
	key := types.NamespacedName{Namespace: "demo", Name: "preference"}
	wait := "host=preference.demo.svc&port=8443&wait=60s&version=" + first.Version

	// A stale version is answered at once.
	if got := decode(t, e.get(t.Context(), e.caller, "host=preference.demo.svc&port=8443&wait=60s&version=old")); got.Version != first.Version {
		t.Fatalf("stale version: got %s, want %s", got.Version, first.Version)
	}

	// A change that leaves the answer as it was keeps the poll waiting; one
	// that changes it ends the poll.
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- e.get(context.Background(), e.caller, wait) }()
	e.waiting(t, 1)
	if w := e.get(t.Context(), e.caller, wait); w.Code != http.StatusTooManyRequests {
		t.Fatalf("second poll of one caller: status %d, want 429", w.Code)
	}
	e.src.notify(key)
	e.waiting(t, 1) // woken, same version, waiting again

	var s discoveryv1.EndpointSlice
	if err := e.kube.Get(t.Context(), types.NamespacedName{Namespace: "demo", Name: "preference-abc"}, &s); err != nil {
		t.Fatal(err)
	}
	s.Endpoints[0].Conditions.Ready = ptr.To(false)
	if err := e.kube.Update(t.Context(), &s); err != nil {
		t.Fatal(err)
	}
	e.src.notify(key)
	got := decode(t, <-done)
	if got.Version == first.Version || len(got.Endpoints) != 0 {
		t.Fatalf("after the change: %+v", got)
	}
	e.waiting(t, 0)

	// A client that leaves ends its poll.
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		done <- e.get(ctx, e.caller, "host=preference.demo.svc&port=8443&wait=60s&version="+got.Version)
	}()
	e.waiting(t, 1)
	cancel()
	<-done
	e.waiting(t, 0)
	e.src.mu.Lock()
	defer e.src.mu.Unlock()
	if len(e.src.watches) != 0 {
		t.Errorf("watches left behind: %v", e.src.watches)
	}
}

func TestHandlerWaitEnds(t *testing.T) {
	e := newHandlerEnv(t, HandlerOptions{})
	first := decode(t, e.get(t.Context(), e.caller, "host=preference.demo.svc&port=8443"))
	start := time.Now()
	got := decode(t, e.get(t.Context(), e.caller, "host=preference.demo.svc&port=8443&wait=50ms&version="+first.Version))
	if got.Version != first.Version || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("after %s: %+v", time.Since(start), got)
	}
}

// TestWaitSlots: per-caller and overall caps on waiting requests.
func TestWaitSlots(t *testing.T) {
	e := newHandlerEnv(t, HandlerOptions{MaxWaitsPerCaller: 1, MaxWaits: 2})
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{3}
	for i, step := range []struct {
		acquire bool // else release
		key     [32]byte
		want    bool
	}{
		{true, a, true},
		{true, a, false}, // a holds its one slot
		{true, b, true},
		{true, c, false}, // all slots taken
		{false, a, true},
		{true, c, true},
	} {
		if !step.acquire {
			e.h.releaseWait(step.key)
			continue
		}
		if got := e.h.acquire(step.key); got != step.want {
			t.Fatalf("step %d: acquire(%x) = %v, want %v", i, step.key[0], got, step.want)
		}
	}
}
