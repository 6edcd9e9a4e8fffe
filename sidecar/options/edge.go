package options

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/podtls/podtls/sidecar/proxy"
)

// edgeFlags holds the raw edge flags until validateEdge turns them into Config.
type edgeFlags struct {
	redirect      string
	redirectHosts []string
	trusted       []string
	proxyProtocol []string
}

func (e *edgeFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&e.redirect, "redirect", "", "plaintext HTTP listener answering every request with 308 to https on the TLS port clients use: `LISTEN=HTTPS-PORT`, e.g. :8080=443 (443 is left out of the URL); needs --redirect-host")
	fs.Func("redirect-host", "DNS `NAME` --redirect sends to https (wildcards \"*.example.com\" match one label); any other Host gets 421 (repeatable)", appendTo(&e.redirectHosts))
	fs.Func("trusted-proxy", "http mode: `CIDR` (or IP) of a proxy in front of the sidecar whose X-Forwarded-For is kept and appended to; from any other peer it is replaced (repeatable)", appendTo(&e.trusted))
	fs.Func("proxy-protocol", "inbound `PORT` whose connections must start with a PROXY protocol v2 header; its source address becomes the client's (repeatable)", appendTo(&e.proxyProtocol))
}

// apply validates the edge flags into c; the inbound, outbound and admin
// flags must already be parsed.
func (e *edgeFlags) apply(c *Config) error {
	if e.redirect == "" && len(e.redirectHosts) > 0 {
		return errors.New("--redirect-host needs --redirect")
	}
	if e.redirect != "" {
		r, err := e.parseRedirect(c)
		if err != nil {
			return err
		}
		c.Redirect = r
	}
	if len(e.trusted) > 0 && c.Mode != proxy.ModeHTTP {
		return errors.New("--trusted-proxy applies to --mode http: tcp mode passes no headers")
	}
	for _, s := range e.trusted {
		pfx, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("--trusted-proxy %q: %w", s, err)
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx)
	}
	for _, port := range e.proxyProtocol {
		listen := ""
		for _, in := range c.Inbound {
			if _, p, _ := net.SplitHostPort(in.Listen); p == port {
				listen = in.Listen
			}
		}
		if listen == "" {
			return fmt.Errorf("--proxy-protocol %q: want the port of an --inbound listener", port)
		}
		if c.ProxyProtocol == nil {
			c.ProxyProtocol = map[string]bool{}
		}
		c.ProxyProtocol[listen] = true
	}
	return nil
}

func (e *edgeFlags) parseRedirect(c *Config) (*proxy.Redirect, error) {
	listen, port, ok := strings.Cut(e.redirect, "=")
	if !ok {
		return nil, fmt.Errorf("--redirect %q: want LISTEN=HTTPS-PORT, e.g. :8080=443", e.redirect)
	}
	if err := checkAddr(listen); err != nil {
		return nil, fmt.Errorf("--redirect %q: listen address: %w", e.redirect, err)
	}
	httpsPort, err := strconv.Atoi(port)
	if err != nil || httpsPort < 1 || httpsPort > 65535 {
		return nil, fmt.Errorf("--redirect %q: https port %q: want 1-65535", e.redirect, port)
	}
	_, lp, _ := net.SplitHostPort(listen)
	if _, ap, _ := net.SplitHostPort(c.Admin); ap == lp {
		return nil, fmt.Errorf("--redirect %s: port %s is the --admin port", listen, lp)
	}
	for _, in := range c.Inbound {
		if _, p, _ := net.SplitHostPort(in.Listen); p == lp {
			return nil, fmt.Errorf("--redirect %s: port %s is used by --inbound %s", listen, lp, in)
		}
	}
	for _, o := range c.Outbound {
		if _, p, _ := net.SplitHostPort(o.Listen); p == lp {
			return nil, fmt.Errorf("--redirect %s: port %s is used by --outbound %s", listen, lp, o)
		}
	}
	if len(e.redirectHosts) == 0 {
		return nil, errors.New("--redirect needs at least one --redirect-host: the names it may send clients to")
	}
	r := proxy.Redirect{Listen: listen, HTTPSPort: httpsPort, Hosts: e.redirectHosts}
	if _, err := proxy.NewRedirector(r, nil, nil); err != nil {
		return nil, fmt.Errorf("--redirect-host: %w", err)
	}
	return &r, nil
}

// parsePrefix reads a CIDR or a single IP address.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errors.New("want a CIDR such as 10.0.0.0/8 or an IP address")
	}
	return pfx.Masked(), nil
}
