package server

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/internal/testpki"
	"github.com/podtls/podtls/tlsconfig"
)

// TestClientCertificates: the sign API keeps working for token clients that
// send no certificate and for mesh clients that send theirs; a certificate of
// another CA fails the handshake (documented: a token client has no reason to
// send one). The discovery handler is mounted and sees the verified peer.
func TestClientCertificates(t *testing.T) {
	authority := testAuthority(t, staticServices{names: []string{"preference"}})
	discovery := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id, err := tlsconfig.SPIFFEID(r.TLS.PeerCertificates[0])
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, id)
	})
	ts := startServer(t, Options{
		Authority:     authority,
		Authenticator: fakeAuth{"web": {Namespace: "demo", ServiceAccount: "web", PodName: "web-0"}},
		Rate:          rate.Inf,
		Discovery:     discovery,
	})
	const meshID = "spiffe://cluster.local/ns/demo/sa/web"
	m := authority.Material()
	mesh := &testpki.CA{Cert: m.Intermediate, Key: m.Key, Chain: append([]*x509.Certificate{m.Intermediate}, m.Chain...)}
	foreign := testpki.NewCA(t, "foreign")

	for _, tt := range []struct {
		name          string
		leaf          *testpki.Leaf
		wantHandshake bool
		wantDiscovery int
		wantBody      string
	}{
		{name: "no certificate", wantHandshake: true, wantDiscovery: http.StatusUnauthorized},
		{name: "mesh certificate", leaf: mesh.Issue(t, testpki.LeafOptions{SPIFFEID: meshID}), wantHandshake: true,
			wantDiscovery: http.StatusOK, wantBody: meshID},
		{name: "certificate of another CA", leaf: foreign.Issue(t, testpki.LeafOptions{SPIFFEID: meshID})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ts.bundle)
			cfg := &tls.Config{RootCAs: pool}
			if tt.leaf != nil {
				pair, err := tls.X509KeyPair(tt.leaf.ChainPEM, tt.leaf.KeyPEM)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificates = []tls.Certificate{pair}
			}
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
			defer client.CloseIdleConnections()
			c := &testServer{url: ts.url, client: client}

			if !tt.wantHandshake {
				// In TLS 1.3 the client's side of the handshake ends before the
				// server has judged its certificate: the refusal is the alert
				// its first read gets (over HTTP it surfaces in varying wraps).
				conn, err := tls.Dial("tcp", strings.TrimPrefix(ts.url, "https://"), cfg)
				if err == nil {
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, err = conn.Read(make([]byte, 1))
					conn.Close()
				}
				if err == nil || !strings.Contains(err.Error(), "bad certificate") {
					t.Fatalf("handshake with a foreign certificate: %v, want a bad certificate alert", err)
				}
				return
			}
			if status, body := c.do(t, http.MethodPost, "web", signBody(t, newCSR(t, "web.demo.svc"), "")); status != http.StatusOK {
				t.Fatalf("sign: status %d: %s", status, body)
			}
			resp, err := client.Get(ts.url + discoveryapi.EndpointsPath)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantDiscovery || string(body) != tt.wantBody {
				t.Fatalf("discovery: status %d body %q, want %d %q", resp.StatusCode, body, tt.wantDiscovery, tt.wantBody)
			}
		})
	}
}
