package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"

	"github.com/podtls/podtls/tlsconfig"
)

// ClientCertHeader carries the verified client certificate to the app in
// HTTP mode, in Envoy's X-Forwarded-Client-Cert form:
// By=<own SPIFFE ID>;Hash=<SHA-256 hex of the client leaf>;Subject="<subject>";URI=<client SPIFFE ID>.
// It is only set for mTLS clients; any copy a client sends is removed.
const ClientCertHeader = "X-Forwarded-Client-Cert"

// setForwarded sets the client context headers on a request to the app.
// ReverseProxy's Rewrite has already dropped X-Forwarded-For, -Host and
// -Proto from pr.Out; pr.In still holds what the client sent.
//
// X-Forwarded-For: the peer's address (the source of the PROXY header on a
// proxy-protocol port) is appended to the client's list when the peer is
// one of the trusted proxies, and replaces it otherwise. Forwarded (RFC
// 7239) never reaches the app (Rewrite removes it), so there is one list to
// trust. X-Forwarded-Proto is always https: TLS ended here. The identity
// headers are the sidecar's alone.
func (p *Proxy) setForwarded(pr *httputil.ProxyRequest) {
	out := pr.Out.Header
	peer := peerAddr(pr.In.RemoteAddr)
	xff := peer.String()
	if p.trusted(peer) {
		if prior := pr.In.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + xff
		}
	}
	if peer.IsValid() {
		out.Set("X-Forwarded-For", xff)
	}
	out.Set("X-Forwarded-Host", pr.In.Host)
	out.Set("X-Forwarded-Proto", "https")

	out.Del(ClientIDHeader)
	out.Del(ClientCertHeader)
	if pr.In.TLS == nil || len(pr.In.TLS.PeerCertificates) == 0 {
		return
	}
	leaf := pr.In.TLS.PeerCertificates[0]
	id, err := tlsconfig.SPIFFEID(leaf)
	if err != nil {
		return
	}
	out.Set(ClientIDHeader, id)
	var self string
	if p.cfg.SelfID != nil {
		self = p.cfg.SelfID()
	}
	out.Set(ClientCertHeader, xfcc(self, id, leaf))
}

// xfcc renders one X-Forwarded-Client-Cert element.
func xfcc(self, id string, leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.Raw)
	var b strings.Builder
	if self != "" {
		b.WriteString("By=" + self + ";")
	}
	b.WriteString("Hash=" + hex.EncodeToString(sum[:]))
	b.WriteString(";Subject=" + quoteXFCC(leaf.Subject.String()))
	b.WriteString(";URI=" + id)
	return b.String()
}

// quoteXFCC quotes a value that may hold ';', ',' or '"' as Envoy does, with
// control and non-ASCII characters escaped so the header stays one valid line.
func quoteXFCC(s string) string { return strconv.QuoteToASCII(s) }

// trusted reports whether addr is one of the trusted proxies.
func (p *Proxy) trusted(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	for _, pfx := range p.cfg.TrustedProxies {
		if pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// peerAddr parses the IP of a host:port RemoteAddr; IPv4-mapped IPv6 is
// reported as IPv4.
func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}
