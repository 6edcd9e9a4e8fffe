package proxy

import (
	"errors"
	"net"
	"strings"

	"github.com/pires/go-proxyproto"

	"github.com/podtls/podtls/tlsconfig"
)

// errProxyV1 refuses the text form of the PROXY protocol: load balancers
// that can send v2 should.
var errProxyV1 = errors.New("proxyproto: version 1 header refused; send version 2")

// withProxyProtocol makes ln expect a PROXY protocol v2 header before the TLS
// ClientHello of every connection (strict: a connection without one fails
// its handshake and is closed). The header's source address becomes the
// connection's remote address: the logged peer and, in http mode, the
// address X-Forwarded-For carries. A LOCAL header (a load balancer's health
// check) keeps the TCP peer. The header must arrive within the handshake
// timeout.
func (p *Proxy) withProxyProtocol(ln net.Listener) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		Policy:            func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
		ReadHeaderTimeout: p.cfg.HandshakeTimeout,
		ValidateHeader: func(h *proxyproto.Header) error {
			if h.Version != 2 {
				return errProxyV1
			}
			return nil
		},
	}
}

// failureReason labels a failed inbound handshake, PROXY header problems
// included.
func failureReason(err error) string {
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return "no_proxy_header"
	case err != nil && strings.Contains(err.Error(), "proxyproto:"):
		return "bad_proxy_header"
	}
	return tlsconfig.FailureReason(err)
}
