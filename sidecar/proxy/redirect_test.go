package proxy

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/sidecar/metrics"
)

// startRedirector serves a Redirector on a loopback port and returns its address.
func startRedirector(t *testing.T, r Redirect) string {
	t.Helper()
	addr, _ := startRedirectorWith(t, r, metrics.NewRegistry())
	return addr
}

func startRedirectorWith(t *testing.T, r Redirect, reg *metrics.Registry) (string, *Redirector) {
	t.Helper()
	r.Listen = "127.0.0.1:0"
	rd, err := NewRedirector(r, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Listen(); err != nil {
		t.Fatal(err)
	}
	go rd.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = rd.Shutdown(ctx)
	})
	return rd.Addr().String(), rd
}

// TestRedirect sends curl -I-like requests over real sockets: known hosts get
// 308 to https with path and query kept, the port omitted when it is 443;
// anything else gets 421 and no Location.
func TestRedirect(t *testing.T) {
	hosts := []string{"shop.example.com", "*.apps.example.com"}
	at443 := startRedirector(t, Redirect{HTTPSPort: 443, Hosts: hosts})
	at8443 := startRedirector(t, Redirect{HTTPSPort: 8443, Hosts: hosts})
	client := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, tc := range []struct {
		name, addr, method, host, target string
		want                             int
		location                         string
	}{
		{"head", at443, "HEAD", "shop.example.com", "/x", 308, "https://shop.example.com/x"},
		{"get-query", at443, "GET", "shop.example.com", "/a/b?q=1&r=%2F", 308, "https://shop.example.com/a/b?q=1&r=%2F"},
		{"post-keeps-method-by-308", at443, "POST", "shop.example.com", "/form", 308, "https://shop.example.com/form"},
		{"host-with-port", at443, "GET", "shop.example.com:8080", "/", 308, "https://shop.example.com/"},
		{"case-and-dot", at443, "GET", "SHOP.Example.com.", "/", 308, "https://shop.example.com/"},
		{"https-port", at8443, "GET", "shop.example.com", "/x?y", 308, "https://shop.example.com:8443/x?y"},
		{"wildcard", at443, "GET", "a.apps.example.com", "/", 308, "https://a.apps.example.com/"},
		{"wildcard-one-label-only", at443, "GET", "a.b.apps.example.com", "/", 421, ""},
		{"wildcard-not-apex", at443, "GET", "apps.example.com", "/", 421, ""},
		{"unknown-host", at443, "GET", "evil.example.net", "/x", 421, ""},
		{"suffix-trick", at443, "GET", "shop.example.com.evil.net", "/", 421, ""},
		{"ipv4-literal", at443, "GET", "127.0.0.1", "/", 421, ""},
		{"ipv6-literal", at443, "GET", "[::1]:8080", "/", 421, ""},
		{"double-slash-path", at443, "GET", "shop.example.com", "//evil.net/x", 308, "https://shop.example.com//evil.net/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://"+tc.addr+tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || resp.Header.Get("Location") != tc.location {
				t.Fatalf("%s %s Host %s: %d Location %q; want %d %q", tc.method, tc.target, tc.host,
					resp.StatusCode, resp.Header.Get("Location"), tc.want, tc.location)
			}
		})
	}
}

// TestRedirectCounted: operators see redirects and refusals apart.
func TestRedirectCounted(t *testing.T) {
	reg := metrics.NewRegistry()
	addr, _ := startRedirectorWith(t, Redirect{HTTPSPort: 443, Hosts: []string{"shop.example.com"}}, reg)
	for _, host := range []string{"shop.example.com", "evil.example.net", "evil.example.net"} {
		req, _ := http.NewRequest("HEAD", "http://"+addr+"/", nil)
		req.Host = host
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var b strings.Builder
	_ = reg.WriteText(&b)
	for _, want := range []string{`podtls_sidecar_redirects_total{result="redirected"} 1`, `podtls_sidecar_redirects_total{result="misdirected"} 2`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
}

// TestRedirectAbsoluteForm: a proxy-style request line names its own host;
// that host is checked like a Host header.
func TestRedirectAbsoluteForm(t *testing.T) {
	addr := startRedirector(t, Redirect{HTTPSPort: 443, Hosts: []string{"shop.example.com"}})
	for target, want := range map[string]string{
		"http://evil.example.net/x": "421",
		"http://shop.example.com/x": "308 Permanent Redirect\r\nLocation: https://shop.example.com/x",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("GET " + target + " HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n"))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		c.Close()
		if !strings.Contains(string(buf[:n]), want) {
			t.Errorf("GET %s: %q, want it to contain %q", target, buf[:n], want)
		}
	}
}

// FuzzRedirectLocation: whatever the Host and target, the answer is 421 or a
// Location on https at one of the configured names: never an open redirect.
func FuzzRedirectLocation(f *testing.F) {
	for _, h := range []string{"shop.example.com", "a.apps.example.com:80", "[::1]", "evil.net", "shop.example.com@evil.net", "x.apps.example.com.", ""} {
		f.Add(h, "/x?y=1")
	}
	r := Redirect{HTTPSPort: 443, Hosts: []string{"shop.example.com", "*.apps.example.com"}}
	f.Fuzz(func(t *testing.T, host, target string) {
		loc, ok := r.location(host, target)
		if !ok {
			return
		}
		rest, ok := strings.CutPrefix(loc, "https://")
		authority, _, slash := strings.Cut(rest, "/")
		if !ok || !slash {
			t.Fatalf("location(%q, %q) = %q: not https://HOST/...", host, target, loc)
		}
		// The authority is what a browser would connect to: a configured name, no user info, no port.
		if u, err := url.Parse("https://" + authority + "/"); err != nil || u.User != nil || u.Port() != "" || !r.known(u.Host) {
			t.Fatalf("location(%q, %q) = %q: authority %q is not a configured host", host, target, loc, authority)
		}
	})
}
