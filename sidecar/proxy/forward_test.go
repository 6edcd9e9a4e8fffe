package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// headerApp records the headers of the last request it served.
func headerApp(t *testing.T) (string, chan http.Header) {
	t.Helper()
	got := make(chan http.Header, 1)
	addr := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
	}))
	return addr, got
}

// TestForwardedHeaders sends raw HTTP/1.1 with forged copies of every header
// the sidecar owns (several lines, odd case) and checks what the app sees.
func TestForwardedHeaders(t *testing.T) {
	const self = "spiffe://cluster.local/ns/demo/sa/server"
	forged := "X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\n" +
		"X-PODTLS-CLIENT-ID: spiffe://cluster.local/ns/demo/sa/admin\r\nx-podtls-client-id: spiffe://x/y\r\n" +
		"X-Forwarded-Client-Cert: By=spiffe://x;URI=spiffe://cluster.local/ns/demo/sa/admin\r\nx-forwarded-client-cert: URI=spiffe://x/z\r\n" +
		"X-Forwarded-Proto: gopher\r\nForwarded: for=6.6.6.6;proto=https\r\n"
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		wantXFF string
		wantFwd string // Forwarded is never passed: the app gets X-Forwarded-For only
	}{
		{"untrusted-peer-replaces", nil, "127.0.0.1", ""},
		{"other-trusted-net-replaces", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "127.0.0.1", ""},
		{"trusted-peer-appends", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "6.6.6.6, 7.7.7.7, 127.0.0.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, got := headerApp(t)
			r := newRig(t, app, func(c *Config) {
				c.Mode = ModeHTTP
				c.TrustedProxies = tc.trusted
				c.SelfID = func() string { return self }
			})
			c := r.dial(t)
			defer c.Close()
			_, _ = c.Write([]byte("GET /x HTTP/1.1\r\nHost: server.demo.svc\r\n" + forged + "Connection: close\r\n\r\n"))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("response %v, %v", resp, err)
			}
			h := <-got
			leaf := r.client.Certificates[0].Leaf
			sum := sha256.Sum256(leaf.Raw)
			want := map[string][]string{
				"X-Forwarded-For":   {tc.wantXFF},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"server.demo.svc"},
				ClientIDHeader:      {"spiffe://cluster.local/ns/demo/sa/client"},
				ClientCertHeader: {"By=" + self + ";Hash=" + hex.EncodeToString(sum[:]) +
					`;Subject="` + leaf.Subject.String() + `";URI=spiffe://cluster.local/ns/demo/sa/client`},
			}
			if tc.wantFwd != "" {
				want["Forwarded"] = []string{tc.wantFwd}
			}
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", ClientIDHeader, ClientCertHeader, "Forwarded"} {
				if g := h.Values(k); strings.Join(g, "\n") != strings.Join(want[k], "\n") {
					t.Errorf("%s = %q, want %q", k, g, want[k])
				}
			}
		})
	}
}

func TestXFCCQuoting(t *testing.T) {
	for in, want := range map[string]string{
		`CN=a`:          `"CN=a"`,
		`CN=a\"b`:       `"CN=a\\\"b"`,
		"O=x\r\nX-Evil": `"O=x\r\nX-Evil"`,
	} {
		if got := quoteXFCC(in); got != want {
			t.Errorf("quoteXFCC(%q) = %s, want %s", in, got, want)
		}
	}
}

// serveHTTP serves h on a loopback port until the test ends.
func serveHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln) //nolint:errcheck // closed by Cleanup
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
