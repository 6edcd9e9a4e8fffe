package exposure

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/sidecar/proxy"
)

// podIP stands in for the pod's IP: a non-loopback address of this machine
// when it has one, else 127.0.0.2 (on Linux every 127/8 address is local,
// and a socket bound to 127.0.0.1 does not accept connections to it, as a
// socket bound to loopback does not accept connections to the pod IP).
func podIP(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
					return ip.Unmap()
				}
			}
		}
	}
	return netip.MustParseAddr("127.0.0.2")
}

// listen binds host:port (port 0: any free port) and accepts until the test ends.
func listen(t *testing.T, host string, port int) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, ln.Addr().(*net.TCPAddr).Port
}

func TestCheckRealSockets(t *testing.T) {
	ip := podIP(t)
	_, wildcard := listen(t, "0.0.0.0", 0)
	_, onPodIP := listen(t, ip.String(), 0)
	_, loopback := listen(t, "127.0.0.1", 0)
	ln, closed := listen(t, "127.0.0.1", 0)
	ln.Close()
	for _, tc := range []struct {
		name    string
		port    int
		exposed bool
	}{
		{"bound to 0.0.0.0", wildcard, true},
		{"bound to the pod IP", onPodIP, true},
		{"bound to 127.0.0.1", loopback, false},
		{"nothing listening", closed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(context.Background(), (&net.Dialer{}).DialContext, []netip.Addr{ip}, []int{tc.port}, time.Second, time.Unix(100, 0))
			if !r.Enabled || len(r.Ports) != 1 || r.CheckedAt != time.Unix(100, 0).UTC() {
				t.Fatalf("report: %+v", r)
			}
			p := r.Ports[0]
			if p.Exposed != tc.exposed || p.Error != "" {
				t.Fatalf("port %d on %s: %+v, want exposed=%v", tc.port, ip, p, tc.exposed)
			}
			if tc.exposed && (len(p.Addresses) != 1 || !strings.Contains(p.Fix, "127.0.0.1:"+strconv.Itoa(tc.port))) {
				t.Fatalf("exposed port without address or fix: %+v", p)
			}
		})
	}
}

// fakeClock hands Run a channel per wait that the test fires by hand.
type fakeClock struct {
	now   time.Time
	waits chan chan time.Time
}

func (f *fakeClock) after(time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	f.waits <- ch
	return ch
}

// tick waits until Run sleeps, then wakes it.
func (f *fakeClock) tick(t *testing.T) {
	t.Helper()
	select {
	case ch := <-f.waits:
		f.now = f.now.Add(DefaultInterval)
		ch <- f.now
	case <-time.After(10 * time.Second):
		t.Fatal("Run never waited for the next check")
	}
}

func wait(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no check finished")
	}
}

// TestCheckerFindsLatePort: the app binds 0.0.0.0 after the first check; the
// next check finds it, sets the gauge and logs one warning; a later rebind to
// loopback clears it.
func TestCheckerFindsLatePort(t *testing.T) {
	ip := podIP(t)
	ln, port := listen(t, "0.0.0.0", 0)
	ln.Close() // the app has not started yet
	reg := metrics.NewRegistry()
	var logs bytes.Buffer
	clock := &fakeClock{now: time.Unix(1000, 0), waits: make(chan chan time.Time, 1)}
	var reports []string
	c := New(Config{PodIPs: []netip.Addr{ip}, Ports: []int{port}, Registry: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return clock.now }, After: clock.after,
		Report: func(reason, msg string) { reports = append(reports, reason+": "+msg) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	checked := c.Checked()
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	gauge := func() string {
		var b bytes.Buffer
		if err := reg.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(b.String(), "\n") {
			if strings.HasPrefix(l, `podtls_sidecar_plaintext_exposed{port="`+strconv.Itoa(port)+`"}`) {
				return l[strings.LastIndexByte(l, ' ')+1:]
			}
		}
		return ""
	}
	step := func(name string, exposed bool, gaugeWant string) {
		t.Helper()
		wait(t, checked)
		checked = c.Checked()
		r := c.Report()
		if len(r.Exposed()) > 0 != exposed || r.CheckedAt != clock.now.UTC() {
			t.Fatalf("%s: report %+v, want exposed=%v at %v", name, r, exposed, clock.now)
		}
		if g := gauge(); g != gaugeWant {
			t.Fatalf("%s: gauge %q, want %q", name, g, gaugeWant)
		}
	}
	step("before the app starts", false, "0")
	app, _ := listen(t, "0.0.0.0", port)
	clock.tick(t)
	step("app on 0.0.0.0", true, "1")
	clock.tick(t)
	step("still on 0.0.0.0", true, "1")
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings, want 1 per change:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "bind the app to 127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("warning does not name the fix:\n%s", logs.String())
	}
	if len(reports) != 1 || !strings.HasPrefix(reports[0], "PodtlsPlaintextExposed: app port "+strconv.Itoa(port)) {
		t.Fatalf("Event reports %q, want one per change", reports)
	}
	app.Close()
	listen(t, "127.0.0.1", port) // fixed
	clock.tick(t)
	step("app on 127.0.0.1", false, "0")
	if !strings.Contains(logs.String(), "no longer reachable") {
		t.Fatalf("the fix was not logged:\n%s", logs.String())
	}
}

func TestCheckerDisabled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		reason string
	}{
		{"no pod IP", Config{Ports: []int{8080}}, "POD_IP"},
		{"no port", Config{PodIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, "no inbound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Dial = func(context.Context, string, string) (net.Conn, error) {
				t.Fatal("dialled while disabled")
				return nil, nil
			}
			c := New(tc.cfg)
			c.Run(context.Background()) // returns at once
			r := c.Report()
			if r.Enabled || !strings.Contains(r.Reason, tc.reason) {
				t.Fatalf("report %+v, want disabled because of %q", r, tc.reason)
			}
		})
	}
}

func TestTargetPorts(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []int
	}{
		{"one", []string{":8443=127.0.0.1:8080"}, []int{8080}},
		{"localhost and ipv6", []string{":8443=localhost:8080", ":9443=[::1]:9090"}, []int{8080, 9090}},
		{"same target twice", []string{":8443=127.0.0.1:8080", ":9443=localhost:8080"}, []int{8080}},
		{"target is the sidecar's own listener", []string{":8443=127.0.0.1:8080", ":8080=127.0.0.1:9090"}, []int{9090}},
		{"non-loopback target", []string{":8443=10.0.0.5:8080"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []proxy.Inbound
			for _, s := range tc.in {
				i, err := proxy.ParseInbound(s)
				if err != nil {
					t.Fatal(err)
				}
				in = append(in, i)
			}
			if got := TargetPorts(in); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("TargetPorts(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParsePodIPs(t *testing.T) {
	for _, tc := range []struct {
		name, ip, ips string
		want          []string
		err           bool
	}{
		{"none", "", "", nil, false},
		{"single", "10.1.2.3", "", []string{"10.1.2.3"}, false},
		{"dual stack wins", "10.1.2.3", "10.1.2.3,fd00::3", []string{"10.1.2.3", "fd00::3"}, false},
		{"spaces and duplicates", "", " 10.1.2.3 , 10.1.2.3", []string{"10.1.2.3"}, false},
		{"garbage", "not-an-ip", "", nil, true},
		{"unspecified", "0.0.0.0", "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePodIPs(tc.ip, tc.ips)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if !reflect.DeepEqual(s, tc.want) {
				t.Fatalf("got %v, want %v", s, tc.want)
			}
		})
	}
}
