// Package exposure detects a plaintext bypass: an app port that the sidecar
// fronts with TLS but that is also reachable on the pod's own IP, where any
// pod can call it without mTLS and without the allow list. The check runs
// inside the pod: it dials POD_IP:TARGET for every inbound target port. A
// connection that is accepted means the app listens on 0.0.0.0 (or the pod
// IP) instead of loopback.
package exposure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podtls/podtls/sidecar/proxy"
)

// Report is the JSON answer of the admin endpoint GET /plaintext (see
// docs/sidecar.md); the CLI decodes it. Fields are only ever added.
type Report struct {
	// Enabled is false when the check cannot run (no pod IP: the sidecar
	// runs outside Kubernetes or POD_IP is not set); Reason says why.
	Enabled bool     `json:"enabled"`
	Reason  string   `json:"reason,omitempty"`
	PodIPs  []string `json:"pod_ips,omitempty"`
	// CheckedAt is zero until the first check has finished.
	CheckedAt time.Time `json:"checked_at,omitzero"`
	Ports     []Port    `json:"ports,omitempty"`
}

// Port is the state of one app port the sidecar fronts.
type Port struct {
	Port    int  `json:"port"`
	Exposed bool `json:"exposed"`
	// Addresses where a plaintext connection was accepted (POD_IP:PORT).
	Addresses []string `json:"addresses,omitempty"`
	// Error of a dial that neither connected nor was refused (timeout,
	// unreachable): the port is then not known to be exposed.
	Error string `json:"error,omitempty"`
	// Fix is set when Exposed: what to change in the app.
	Fix string `json:"fix,omitempty"`
}

// Exposed returns the ports of r that are exposed.
func (r Report) Exposed() []Port {
	var out []Port
	for _, p := range r.Ports {
		if p.Exposed {
			out = append(out, p)
		}
	}
	return out
}

// Fix is the one-line remedy for an exposed app port.
func Fix(port int) string {
	return fmt.Sprintf("bind the app to 127.0.0.1:%d (or [::1]:%d), not 0.0.0.0:%d or the pod IP", port, port, port)
}

// TargetPorts returns the app ports behind the inbound listeners, sorted and
// once each. A port the sidecar itself listens on is left out (connecting to
// it would find the sidecar, not the app), and so is a target that is not on
// loopback (it was configured to be reachable elsewhere).
func TargetPorts(in []proxy.Inbound) []int {
	own := map[string]bool{}
	for _, i := range in {
		if _, p, err := net.SplitHostPort(i.Listen); err == nil {
			own[p] = true
		}
	}
	var ports []int
	for _, i := range in {
		host, p, err := net.SplitHostPort(i.Target)
		if err != nil || own[p] || !loopbackHost(host) {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 || slices.Contains(ports, n) {
			continue
		}
		ports = append(ports, n)
	}
	slices.Sort(ports)
	return ports
}

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ParsePodIPs reads POD_IPS (comma-separated, dual stack) or else POD_IP.
// Empty input gives no addresses and no error: the check is then disabled.
func ParsePodIPs(podIP, podIPs string) ([]netip.Addr, error) {
	src, name := podIPs, "POD_IPS"
	if strings.TrimSpace(src) == "" {
		src, name = podIP, "POD_IP"
	}
	var out []netip.Addr
	for _, s := range strings.Split(src, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if a.IsUnspecified() {
			return nil, fmt.Errorf("%s: %s is not a pod address", name, s)
		}
		if !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// Dialer opens a TCP connection (net.Dialer.DialContext in production).
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Check dials every pod IP at every port and returns the result, at now.
// It is the whole check, without state: Checker adds the schedule, metric
// and logs.
func Check(ctx context.Context, dial Dialer, ips []netip.Addr, ports []int, timeout time.Duration, now time.Time) Report {
	r := Report{Enabled: true, CheckedAt: now.UTC()}
	for _, ip := range ips {
		r.PodIPs = append(r.PodIPs, ip.String())
	}
	for _, port := range ports {
		p := Port{Port: port}
		var errs []string
		for _, ip := range ips {
			addr := netip.AddrPortFrom(ip, uint16(port)).String()
			dctx, cancel := context.WithTimeout(ctx, timeout)
			c, err := dial(dctx, "tcp", addr)
			cancel()
			switch {
			case err == nil:
				_ = c.Close()
				p.Exposed = true
				p.Addresses = append(p.Addresses, addr)
			case errors.Is(err, syscall.ECONNREFUSED):
				// Nothing listens there: what we want.
			default:
				errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
			}
		}
		if p.Exposed {
			p.Fix = Fix(port)
		} else if len(errs) > 0 {
			p.Error = strings.Join(errs, "; ")
		}
		r.Ports = append(r.Ports, p)
	}
	return r
}
