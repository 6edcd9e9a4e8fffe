package sidecarevents

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
)

func TestHandler(t *testing.T) {
	mesh := testpki.NewCA(t, "mesh")
	other := testpki.NewCA(t, "other")
	pool := x509.NewCertPool()
	pool.AddCert(mesh.Cert)
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop"}, Spec: corev1.PodSpec{ServiceAccountName: "web"}}
	db := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop"}, Spec: corev1.PodSpec{ServiceAccountName: "db"}}
	rec := record.NewFakeRecorder(20)
	h, err := New(Options{Pods: fake.NewClientBuilder().WithObjects(web, db).Build(), Recorder: rec,
		TrustDomain: "cluster.local", TrustPool: func() *x509.CertPool { return pool }, Rate: 1, Burst: 2})
	if err != nil {
		t.Fatal(err)
	}
	webID := mesh.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/shop/sa/web"}).Cert
	stranger := other.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/shop/sa/web"}).Cert
	post := func(cert *x509.Certificate, method string, req any) (int, string) {
		body, _ := json.Marshal(req)
		r := httptest.NewRequest(method, eventsapi.Path, bytes.NewReader(body))
		if cert != nil {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	ok := eventsapi.Request{Pod: "web-1", Reason: eventsapi.ReasonAppReloaded, Message: "told\x1b[31m the app"}
	tests := []struct {
		name string
		cert *x509.Certificate
		meth string
		req  any
		code int
		body string
	}{
		{"recorded", webID, http.MethodPost, ok, http.StatusAccepted, "recorded"},
		{"GET", webID, http.MethodGet, ok, http.StatusMethodNotAllowed, "use POST"},
		{"no certificate", nil, http.MethodPost, ok, http.StatusUnauthorized, "mesh client certificate"},
		{"another CA", stranger, http.MethodPost, ok, http.StatusUnauthorized, "client certificate"},
		{"another service account's pod", webID, http.MethodPost, eventsapi.Request{Pod: "db-0", Reason: eventsapi.ReasonAppReloaded}, http.StatusForbidden, "does not run as"},
		{"no such pod", webID, http.MethodPost, eventsapi.Request{Pod: "web-9", Reason: eventsapi.ReasonAppReloaded}, http.StatusForbidden, "no pod web-9"},
		{"unknown reason", webID, http.MethodPost, eventsapi.Request{Pod: "web-1", Reason: "Killing"}, http.StatusBadRequest, `reason "Killing"`},
		{"unknown field", webID, http.MethodPost, map[string]string{"pod": "web-1", "type": "Warning"}, http.StatusBadRequest, "unknown field"},
		{"second within the burst", webID, http.MethodPost, eventsapi.Request{Pod: "web-1", Reason: eventsapi.ReasonAppCertsWriteFailed, Message: strings.Repeat("x", 3000)}, http.StatusAccepted, "recorded"},
		{"rate limited", webID, http.MethodPost, ok, http.StatusTooManyRequests, "too many"},
	}
	for _, tt := range tests {
		code, body := post(tt.cert, tt.meth, tt.req)
		if code != tt.code || !strings.Contains(body, tt.body) {
			t.Fatalf("%s: %d %q, want %d %q", tt.name, code, body, tt.code, tt.body)
		}
	}
	if got := <-rec.Events; got != "Normal PodtlsAppReloaded told [31m the app" {
		t.Fatalf("first event %q", got)
	}
	if got := <-rec.Events; !strings.HasPrefix(got, "Warning PodtlsAppCertsWriteFailed xxx") || len(got) > 1100 {
		t.Fatalf("second event %q (%d bytes)", got[:60], len(got))
	}
	select { // the recorder writes synchronously: every Event is in the channel now
	case e := <-rec.Events:
		t.Fatalf("extra event %q", e)
	default:
	}
}
