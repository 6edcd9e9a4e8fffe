package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/internal/testpki"
)

const (
	clientID = "spiffe://cluster.local/ns/demo/sa/client"
	serverID = "spiffe://cluster.local/ns/demo/sa/server"
)

// source is a mutable Source for tests.
type source struct {
	mu    sync.Mutex
	mesh  *tls.Certificate
	ext   map[string]*tls.Certificate
	roots *x509.CertPool
}

func (s *source) MeshCertificate() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mesh
}

func (s *source) ExternalCertificate(name string) *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ext[name]
}

func (s *source) TrustPool() *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roots
}

func (s *source) setRoots(p *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roots = p
}

func pair(l *testpki.Leaf) *tls.Certificate {
	return &tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

func pool(cas ...*testpki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func TestVerifyClient(t *testing.T) {
	ca, other := testpki.NewCA(t, "mesh"), testpki.NewCA(t, "other")
	inter := ca.Intermediate(t, "mesh intermediate")
	allow, err := identity.NewMatcher("cluster.local", []string{clientID, "spiffe://cluster.local/ns/ops/*"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	chain := func(l *testpki.Leaf, cas ...*testpki.CA) []*x509.Certificate {
		out := []*x509.Certificate{l.Cert}
		for _, c := range cas {
			out = append(out, c.Cert)
		}
		return out
	}
	cases := []struct {
		name   string
		chain  []*x509.Certificate
		roots  *x509.CertPool
		reason string
	}{
		{"allowed", chain(ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})), pool(ca), ""},
		{"allowed-prefix-via-intermediate", chain(inter.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/ops/sa/x"}), inter), pool(ca), ""},
		{"intermediate-missing", chain(inter.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})), pool(ca), ReasonUnknownCA},
		{"no-cert", nil, pool(ca), ReasonNoClientCert},
		{"other-ca", chain(other.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})), pool(ca), ReasonUnknownCA},
		{"nil-roots-never-system", chain(ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})), nil, ReasonUnknownCA},
		{"expired", chain(ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})), pool(ca), ReasonExpired},
		{"not-allowed", chain(ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/other"})), pool(ca), ReasonNotAllowed},
		{"other-trust-domain", chain(ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://evil.example/ns/demo/sa/client"})), pool(ca), ReasonNotAllowed},
		{"no-spiffe-id", chain(ca.Issue(t, testpki.LeafOptions{DNSNames: []string{"a.demo.svc"}})), pool(ca), ReasonNoSPIFFEID},
		{"malformed-spiffe-id", chain(ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/demo/sa/client/extra"})), pool(ca), ReasonNoSPIFFEID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyClient(tc.roots, allow, tc.chain, now)
			if got := FailureReason(err); got != tc.reason {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.reason, err)
			}
		})
	}
}

func TestVerifyServer(t *testing.T) {
	ca := testpki.NewCA(t, "mesh")
	leaf := ca.Issue(t, testpki.LeafOptions{SPIFFEID: serverID, DNSNames: []string{"server.demo.svc"}})
	now := time.Now()
	cases := []struct {
		name, host, pin, reason string
		statefulPod             bool // verify web2's certificate instead of leaf's
	}{
		{"ok", "server.demo.svc", "", "", false},
		{"ok-pinned", "server.demo.svc", serverID, "", false},
		{"wrong-pin", "server.demo.svc", clientID, ReasonPinnedIDMismach, false},
		{"wrong-name", "other.demo.svc", "", ReasonNameMismatch, false},
		{"ip-not-in-cert", "127.0.0.1", "", ReasonNameMismatch, false},
		// A StatefulSet pod's certificate: its Service names and its own name.
		{"statefulset pod by its own name", "web-2.web.db.svc", "", "", true},
		{"statefulset pod by its own name, cluster domain", "web-2.web.db.svc.cluster.local", "", "", true},
		{"statefulset pod by the Service name", "web.db.svc", "", "", true},
		{"statefulset pod by a sibling's name", "web-0.web.db.svc", "", ReasonNameMismatch, true},
		{"statefulset pod by a wildcard-looking name", "x.web-2.web.db.svc", "", ReasonNameMismatch, true},
	}
	web2 := ca.Issue(t, testpki.LeafOptions{SPIFFEID: "spiffe://cluster.local/ns/db/sa/web",
		DNSNames: []string{"web.db.svc", "web.db.svc.cluster.local", "web-2.web.db.svc", "web-2.web.db.svc.cluster.local"}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := leaf
			if tc.statefulPod {
				l = web2
			}
			err := VerifyServer(pool(ca), tc.host, tc.pin, []*x509.Certificate{l.Cert}, now)
			if got := FailureReason(err); got != tc.reason {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.reason, err)
			}
		})
	}
}

// handshake runs client and server configs over a pipe.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	// Kernel sockets, not net.Pipe: an unbuffered pipe deadlocks when
	// both sides write an alert or a flight at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c1, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	_ = c1.SetDeadline(time.Now().Add(10 * time.Second))
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	srv := tls.Server(c1, server)
	cli := tls.Client(c2, client)
	errc := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			// TLS 1.3 clients learn of a refused certificate on their first
			// read; give them something to read on success.
			_, _ = srv.Write([]byte("x"))
		}
		errc <- err
	}()
	cerr := cli.Handshake()
	if cerr == nil {
		buf := make([]byte, 1)
		_, cerr = cli.Read(buf)
	}
	serr := <-errc
	return cli.ConnectionState(), serr, cerr
}

func TestServerClientHandshake(t *testing.T) {
	ca, next := testpki.NewCA(t, "mesh"), testpki.NewCA(t, "next mesh root")
	pub := testpki.NewCA(t, "public")
	allow, _ := identity.NewMatcher("cluster.local", nil)
	srvSrc := &source{
		mesh:  pair(ca.Issue(t, testpki.LeafOptions{SPIFFEID: serverID, DNSNames: []string{"server.demo.svc"}})),
		ext:   map[string]*tls.Certificate{"shop.example.com": pair(pub.Issue(t, testpki.LeafOptions{DNSNames: []string{"shop.example.com"}}))},
		roots: pool(ca),
	}
	cliSrc := &source{mesh: pair(next.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})), roots: pool(ca)}
	server := Server(srvSrc, allow, Options{})
	client := Client(cliSrc, "server.demo.svc", serverID, Options{})

	// The client's root is not trusted yet.
	if _, serr, _ := handshake(t, server, client); FailureReason(serr) != ReasonUnknownCA {
		t.Fatalf("server error %v, want unknown CA", serr)
	}
	// Reloading the trust pool applies to the next handshake, same config.
	srvSrc.setRoots(pool(ca, next))
	cs, serr, cerr := handshake(t, server, client)
	if serr != nil || cerr != nil {
		t.Fatalf("after trust reload: server %v, client %v", serr, cerr)
	}
	if cs.Version != tls.VersionTLS13 || cs.CurveID != tls.X25519 {
		t.Fatalf("negotiated version %x curve %v, want TLS 1.3 with X25519", cs.Version, cs.CurveID)
	}
	// Post-quantum key exchange only when asked for.
	pq := Client(cliSrc, "server.demo.svc", "", Options{PostQuantum: true})
	if cs, _, cerr := handshake(t, Server(srvSrc, allow, Options{PostQuantum: true}), pq); cerr != nil || cs.CurveID != tls.X25519MLKEM768 {
		t.Fatalf("pq: curve %v err %v", cs.CurveID, cerr)
	}

	// SNI of an external certificate: served without a client certificate.
	edgeClient := &tls.Config{ServerName: "shop.example.com", RootCAs: pool(pub)}
	if _, serr, cerr := handshake(t, server, edgeClient); serr != nil || cerr != nil {
		t.Fatalf("edge: server %v client %v", serr, cerr)
	}
	// The mesh name without a client certificate is refused.
	noCert := &tls.Config{ServerName: "server.demo.svc", RootCAs: pool(ca)}
	if _, serr, _ := handshake(t, server, noCert); FailureReason(serr) != ReasonNoClientCert {
		t.Fatalf("no cert: %v", serr)
	}
	// No mesh certificate loaded yet: the handshake fails, nothing nil is served.
	empty := Server(&source{roots: pool(ca)}, allow, Options{})
	if _, serr, _ := handshake(t, empty, client); !errors.Is(serr, ErrNoCertificate) {
		t.Fatalf("no certificate: %v", serr)
	}
}

// TestEveryBuilderSharesTheRules: one rule for versions and key exchange,
// whichever binary builds the config.
func TestEveryBuilderSharesTheRules(t *testing.T) {
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, ErrNoCertificate }
	for _, pq := range []bool{false, true} {
		o := Options{PostQuantum: pq}
		wantCurves := []tls.CurveID{tls.X25519, tls.CurveP256}
		if pq {
			wantCurves = append([]tls.CurveID{tls.X25519MLKEM768}, wantCurves...)
		}
		hardened := &tls.Config{MinVersion: tls.VersionTLS10, NextProtos: []string{"http/1.1"}}
		Harden(hardened, o)
		for name, c := range map[string]*tls.Config{
			"Server":                      Server(nil, nil, o),
			"Client":                      Client(nil, "a.b.svc", "", o),
			"HTTPSClient":                 HTTPSClient(nil, o),
			"WebServer":                   WebServer(getCert, o),
			"WebServerOptionalClientCert": WebServerOptionalClientCert(getCert, x509.NewCertPool, o),
			"PublicClient":                PublicClient(nil, "", o),
			"Egress":                      Egress(nil, "a.example", o),
			"Harden":                      hardened,
		} {
			if c.MinVersion != tls.VersionTLS12 {
				t.Errorf("%s (pq=%v): MinVersion %x, want TLS 1.2", name, pq, c.MinVersion)
			}
			if !slices.Equal(c.CurvePreferences, wantCurves) {
				t.Errorf("%s (pq=%v): curves %v, want %v", name, pq, c.CurvePreferences, wantCurves)
			}
		}
		if !slices.Equal(hardened.NextProtos, []string{"http/1.1"}) {
			t.Errorf("Harden without NextProtos replaced the caller's ALPN list: %v", hardened.NextProtos)
		}
	}
}

func TestRootsOfTheClients(t *testing.T) {
	if c := HTTPSClient(nil, Options{}); c.RootCAs == nil {
		t.Error("HTTPSClient with nil roots trusts the system roots; want nothing")
	}
	if c := PublicClient(nil, "", Options{}); c.RootCAs != nil {
		t.Error("PublicClient with nil roots does not use the system roots")
	}
	now := func() time.Time { return time.Unix(1e9, 0) }
	if c := PublicClient(x509.NewCertPool(), "acme.example", Options{Now: now}); c.ServerName != "acme.example" || c.Time == nil || !c.Time().Equal(now()) {
		t.Errorf("PublicClient ignores its server name or clock: %q", c.ServerName)
	}
}

// TestEgress: a tls:// outbound verifies the public server against the roots
// it was given (never the mesh pool), by name, and presents no client
// certificate, even to a server that asks for one.
func TestEgress(t *testing.T) {
	pub, mesh := testpki.NewCA(t, "public"), testpki.NewCA(t, "mesh")
	leaf := pair(pub.Issue(t, testpki.LeafOptions{DNSNames: []string{"api.example.com"}}))
	server := WebServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return leaf, nil }, Options{})
	server.ClientAuth = tls.RequestClientCert
	var sawClientCert bool
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		sawClientCert = len(cs.PeerCertificates) > 0
		return nil
	}
	if _, serr, cerr := handshake(t, server, Egress(pool(pub), "api.example.com", Options{})); serr != nil || cerr != nil {
		t.Fatalf("egress handshake: server %v client %v", serr, cerr)
	}
	if sawClientCert {
		t.Fatal("egress presented a client certificate")
	}
	for name, tc := range map[string]struct {
		roots  *x509.CertPool
		server string
		reason string
	}{
		"mesh roots only": {pool(mesh), "api.example.com", ReasonUnknownCA},
		"nil roots":       {nil, "api.example.com", ReasonUnknownCA},
		"wrong name":      {pool(pub), "other.example.com", ReasonNameMismatch},
	} {
		if _, _, cerr := handshake(t, server, Egress(tc.roots, tc.server, Options{})); FailureReason(cerr) != tc.reason {
			t.Errorf("%s: client error %v, want %s", name, cerr, tc.reason)
		}
	}
}

// TestWebServerOptionalClientCert: no client certificate is served as by
// WebServer; a sent certificate must chain to the roots of the moment.
func TestWebServerOptionalClientCert(t *testing.T) {
	ca, next, foreign := testpki.NewCA(t, "mesh"), testpki.NewCA(t, "next mesh root"), testpki.NewCA(t, "foreign")
	serving := pair(ca.Issue(t, testpki.LeafOptions{DNSNames: []string{"ca.podtls-system.svc"}}))
	src := &source{roots: pool(ca)}
	server := WebServerOptionalClientCert(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving, nil },
		src.TrustPool, Options{})
	client := func(l *testpki.Leaf) *tls.Config {
		c := &tls.Config{ServerName: "ca.podtls-system.svc", RootCAs: pool(ca)}
		if l != nil {
			c.Certificates = []tls.Certificate{*pair(l)}
		}
		return c
	}
	expired := ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for _, tt := range []struct {
		name       string
		roots      *x509.CertPool
		leaf       *testpki.Leaf
		wantReason string // "" means the handshake succeeds
	}{
		{name: "no certificate", roots: pool(ca)},
		{name: "mesh certificate", roots: pool(ca), leaf: ca.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})},
		{name: "certificate without SPIFFE ID chains", roots: pool(ca), leaf: ca.Issue(t, testpki.LeafOptions{})},
		{name: "foreign CA", roots: pool(ca), leaf: foreign.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), wantReason: ReasonUnknownCA},
		{name: "expired", roots: pool(ca), leaf: expired, wantReason: ReasonExpired},
		{name: "root not yet trusted", roots: pool(ca), leaf: next.Issue(t, testpki.LeafOptions{SPIFFEID: clientID}), wantReason: ReasonUnknownCA},
		{name: "rotated root trusted at once", roots: pool(ca, next), leaf: next.Issue(t, testpki.LeafOptions{SPIFFEID: clientID})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src.setRoots(tt.roots)
			_, serr, cerr := handshake(t, server, client(tt.leaf))
			if tt.wantReason != "" {
				if FailureReason(serr) != tt.wantReason {
					t.Fatalf("server error %v (reason %q), want reason %q", serr, FailureReason(serr), tt.wantReason)
				}
				return
			}
			if serr != nil || cerr != nil {
				t.Fatalf("server %v, client %v", serr, cerr)
			}
		})
	}
}
