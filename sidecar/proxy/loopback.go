package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Loopback is the host that means "this pod's loopback, IPv4 and IPv6": an
// outbound LISTEN on it binds 127.0.0.1 and, when the pod has it, ::1 (apps
// whose "localhost" resolves to ::1 reach it too); an inbound TARGET on it
// dials 127.0.0.1 and, when nothing listens there, ::1.
const Loopback = "localhost"

// ipv6Unavailable reports whether a listen or dial error means the host has
// no IPv6 loopback (kernel without IPv6, or ::1 removed), as opposed to a
// real problem such as the port being taken.
func ipv6Unavailable(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT)
}

// bindOutbound binds the listen address of o; for Loopback it binds
// 127.0.0.1 and then ::1 on the same port, skipping ::1 when the pod has
// none.
func (p *Proxy) bindOutbound(o *Outbound) ([]net.Listener, error) {
	host, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", o.Listen, err)
	}
	if host != Loopback {
		ln, err := p.cfg.listen(context.Background(), "tcp", o.Listen)
		if err != nil {
			return nil, err
		}
		return []net.Listener{ln}, nil
	}
	v4, err := p.cfg.listen(context.Background(), "tcp4", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return nil, err
	}
	_, port, _ = net.SplitHostPort(v4.Addr().String()) // the port chosen for ":0"
	v6, err := p.cfg.listen(context.Background(), "tcp6", net.JoinHostPort("::1", port))
	switch {
	case err == nil:
		return []net.Listener{v4, v6}, nil
	case ipv6Unavailable(err):
		p.log.Info("no IPv6 loopback: outbound listens on 127.0.0.1 only", "listen", o.Listen, "error", err)
		return []net.Listener{v4}, nil
	default:
		v4.Close()
		return nil, fmt.Errorf("[::1]:%s: %w", port, err)
	}
}

// dialApp dials an inbound target. For Loopback it tries 127.0.0.1 and,
// when that is refused, ::1: the app may listen on either.
func (p *Proxy) dialApp(ctx context.Context, target string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil || host != Loopback {
		return p.dialer.DialContext(ctx, "tcp", target)
	}
	c, err4 := p.dialer.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
	if err4 == nil || !errors.Is(err4, syscall.ECONNREFUSED) {
		return c, err4
	}
	c, err6 := p.dialer.DialContext(ctx, "tcp6", net.JoinHostPort("::1", port))
	if err6 != nil {
		return nil, fmt.Errorf("%w; [::1]:%s: %v", err4, port, err6)
	}
	return c, nil
}
