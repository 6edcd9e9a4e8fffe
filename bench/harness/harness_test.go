package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/bench/handshake"
	"github.com/podtls/podtls/bench/load"
)

func TestCountCPUs(t *testing.T) {
	for in, want := range map[string]int{"0-1": 2, "0": 1, "0,2-3": 3, " 0-3,8 \n": 5, "": 0, "3-1": 0, "x": 0} {
		if got := countCPUs(in); got != want {
			t.Errorf("countCPUs(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestParentFromStat(t *testing.T) {
	tests := []struct {
		stat string
		ppid int
		ok   bool
	}{
		{"123 (nginx) S 77 123 123 0", 77, true},
		{"124 (nginx: worker) process) S 123 1 1", 123, true}, // name with spaces and ')'
		{"garbage", 0, false},
		{"1 (x) S", 0, false},
	}
	for _, tt := range tests {
		ppid, ok := parentFromStat(tt.stat)
		if ppid != tt.ppid || ok != tt.ok {
			t.Errorf("parentFromStat(%q) = %d, %v; want %d, %v", tt.stat, ppid, ok, tt.ppid, tt.ok)
		}
	}
}

func TestRSSOfThisProcess(t *testing.T) {
	m, err := rssKB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Anon <= 0 || m.Anon > m.RSS {
		t.Fatalf("RSS %+v kB", m)
	}
}

func TestParseStatusMem(t *testing.T) {
	got, err := parseStatusMem("Name:\tnginx\nVmRSS:\t   13528 kB\nRssAnon:\t    5756 kB\nRssFile:\t 7772 kB\n")
	if err != nil || got != (mem{RSS: 13528, Anon: 5756}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"Name: x\n", "VmRSS: x kB\nRssAnon: 1 kB\n", "VmRSS: 1 kB\n"} {
		if _, err := parseStatusMem(bad); err == nil {
			t.Errorf("parseStatusMem(%q) succeeded", bad)
		}
	}
}

func TestNginxConfigs(t *testing.T) {
	p := nginxParams{Dir: t.TempDir(), Name: "nginx", Body: backendBody, BackendPort: 1, TLSPort: 2, MTLSPort: 3,
		BackendH2CPort: 4, H2Port: 5,
		EdgeCert: "e.crt", EdgeKey: "e.key", ServerCert: "s.crt", ServerKey: "s.key", RootCA: "r.crt"}
	path, err := writeNginxConf(proxyConf, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, want := range []string{"worker_processes 1;", "ssl_verify_client on;", "ssl_client_certificate r.crt;",
		"listen 127.0.0.1:3 ssl;", "server 127.0.0.1:1;", "ssl_protocols TLSv1.3;", "keepalive 64;", "listen 127.0.0.1:5 ssl http2;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("proxy config lacks %q", want)
		}
	}
	if strings.Contains(conf, "user root") {
		t.Error("user root rendered though Root is false")
	}
	// nginx >= 1.25.1 spells h2 `http2 on;`, in the proxy and in the backend (h2c).
	p.HTTP2On = true
	for _, tmpl := range []struct {
		name, listen string
		conf         func(nginxParams) (string, error)
	}{
		{"proxy", "listen 127.0.0.1:5 ssl;\n    http2 on;", func(p nginxParams) (string, error) { return writeNginxConf(proxyConf, p) }},
		{"backend", "listen 127.0.0.1:4;\n    http2 on;", func(p nginxParams) (string, error) { return writeNginxConf(backendConf, p) }},
	} {
		path, err := tmpl.conf(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tmpl.listen) || strings.Contains(string(b), " http2;") {
			t.Errorf("%s config with HTTP2On lacks %q:\n%s", tmpl.name, tmpl.listen, b)
		}
	}
	if len(backendBody)+1 != 100 {
		t.Errorf("backend answer is %d bytes, want 100", len(backendBody)+1)
	}
}

func TestHTTP2On(t *testing.T) {
	for v, want := range map[string]bool{
		"nginx version: nginx/1.22.1": false, "nginx version: nginx/1.25.0": false, "nginx version: nginx/1.25.1": true,
		"nginx version: nginx/1.26.3 (Ubuntu)": true, "nginx version: nginx/1.3.0": false, "nginx version: nginx/2.0.0": true,
		"?": false, "nginx version: nginx/x.y": false,
	} {
		if got := http2On(v); got != want {
			t.Errorf("http2On(%q) = %v, want %v", v, got, want)
		}
	}
}

// synthetic builds results where the sidecar is 1.4x nginx mTLS on keep-alive
// and 2.5x on mTLS handshakes, and only its edge handshakes fall short.
func synthetic() *Results {
	ka := func(rps ...float64) map[int][]*load.Result {
		m := map[int][]*load.Result{}
		for _, c := range connCounts {
			for _, r := range rps {
				p50 := time.Duration(1e9/r) * time.Duration(c) // any monotone latency
				m[c] = append(m[c], &load.Result{RPS: r / float64(c), P50: p50, P99: 2 * p50})
			}
		}
		return m
	}
	hs := func(rates ...float64) []*handshake.Result {
		var out []*handshake.Result
		for _, r := range rates {
			out = append(out, &handshake.Result{Conns: int64(r), Elapsed: time.Second})
		}
		return out
	}
	return &Results{
		Machine: "test", Tools: "test", Duration: "1s", Rounds: 3, Workers: 4, Conns: connCounts,
		Rows: []*Row{
			{Key: "direct-wrk", Label: "direct", Client: "wrk", Results: ka(100000, 90000, 110000)},
			{Key: "nginx-tls", Label: "nginx TLS", Client: "wrk", Base: "direct-wrk", Results: ka(27000, 24000, 30000)},
			{Key: "sidecar-edge", Label: "sidecar edge", Client: "wrk", Base: "direct-wrk", Ref: "nginx-tls", Results: ka(30000, 26000, 33000)},
			{Key: "direct-fortio", Label: "direct", Client: "fortio", Results: ka(60000, 60000, 60000)},
			{Key: "nginx-mtls", Label: "nginx mTLS", Client: "fortio", Base: "direct-fortio", Results: ka(20000, 10000, 20000)},
			{Key: "sidecar-mtls", Label: "sidecar mTLS", Client: "fortio", Base: "direct-fortio", Ref: "nginx-mtls", Results: ka(28000, 14000, 28000)},
			{Key: "mesh", Label: "mesh", Client: "wrk", Base: "direct-wrk", Err: "warm-up failed: refused"},
		},
		Handshakes: []*HSRow{
			{Key: "hs-nginx-tls", Label: "nginx TLS", Results: hs(4000, 4000, 4000)},
			{Key: "hs-sidecar-edge", Label: "sidecar edge", Ref: "hs-nginx-tls", Results: hs(3800, 3900, 3700)},
			{Key: "hs-nginx-mtls", Label: "nginx mTLS", Results: hs(1000, 1000, 1000)},
			{Key: "hs-sidecar-mtls", Label: "sidecar mTLS", Ref: "hs-nginx-mtls", Results: append(hs(2500, 2600), nil)},
		},
		Memory: []*RSS{
			{Label: "nginx master+worker", StartKB: 16000, AfterLoad: 18000},
			{Label: "sidecar (inbound+edge)", StartKB: 9000, AfterLoad: 15000},
		},
	}
}

func TestReportTargets(t *testing.T) {
	var buf bytes.Buffer
	report(&buf, synthetic())
	t.Log(buf.String())
	out := buf.String()
	for _, want := range []string{
		"PASS  inbound mTLS req/s at 32 conns >= 1.3x nginx mTLS (fortio)  1.40x",
		"MISS  full handshakes/s sidecar-edge >= 1.0x nginx",
		"PASS  full handshakes/s sidecar-mtls >= 2.0x nginx",
		"PASS  idle RSS of the sidecar after start <= 10 MB",
		"dropped: warm-up failed: refused",
		"1.40x nginx mTLS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestSummarizePairsRounds(t *testing.T) {
	res := synthetic()
	byKey := map[string]*Row{}
	for _, r := range res.Rows {
		byKey[r.Key] = r
	}
	s := summarize(byKey["nginx-tls"], byKey, 32)
	// Per-round ratios are 0.27, 0.2667, 0.2727: the median is 0.27.
	if s.xDirect < 0.2699 || s.xDirect > 0.2701 {
		t.Fatalf("x direct = %v, want 0.27", s.xDirect)
	}
	if s.measured != 3 || s.roundsMiss != 0 {
		t.Fatalf("measured %d, missing %d", s.measured, s.roundsMiss)
	}
}

func TestBusy(t *testing.T) {
	for in, want := range map[string]bool{"0.10 0.2 0.3": false, "1.50 1 1": false, "1.51 0 0": true, "16.3 14 8": true, "?": false, "": false} {
		if got := busy(in); got != want {
			t.Errorf("busy(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestCPUFromStat(t *testing.T) {
	// Fields 14 and 15 (utime, stime) of a real /proc/PID/stat line.
	stat := "4242 (nginx: worker) R 4241 4241 4241 0 -1 4194560 1229 0 0 0 250 37 0 0 20 0 1 0 1999 0 0"
	if got, ok := cpuFromStat(stat); !ok || got != 287 {
		t.Fatalf("cpuFromStat = %d, %v; want 287", got, ok)
	}
	if _, ok := cpuFromStat("1 (x) R 1 2"); ok {
		t.Fatal("short stat accepted")
	}
	s, err := cpuSeconds([]cpuOwner{{pid: os.Getpid()}})
	if err != nil || s < 0 {
		t.Fatalf("cpuSeconds(self) = %v, %v", s, err)
	}
}

func TestHandshakeTargetUsesServerCPUWhenClientBound(t *testing.T) {
	res := synthetic()
	for _, h := range res.Handshakes {
		for _, r := range h.Results {
			if r != nil {
				r.ClientCPU = 0.95
			}
			// nginx TLS: 4000 conns on 0.8 s of server CPU; sidecar edge: ~3800 on 0.608 s.
			// Neither server was saturated (elapsed 1 s), so the client was the limit.
			h.CPU = append(h.CPU, map[string]float64{"hs-nginx-tls": 0.8, "hs-sidecar-edge": 0.608, "hs-nginx-mtls": 0.8, "hs-sidecar-mtls": 0.8}[h.Key])
		}
	}
	var buf bytes.Buffer
	report(&buf, res)
	want := "PASS  full handshakes/s sidecar-edge >= 1.0x nginx                1.25x per server core (client-bound)"
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("report lacks %q:\n%s", want, buf.String())
	}
}

func TestResultsEncodeAsJSON(t *testing.T) {
	res := synthetic()
	for _, r := range res.Rows {
		r.CPU = map[int][]float64{32: {known(math.NaN()), 0.5}}
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatalf("results do not encode: %v", err)
	}
	if perUnit(-1, 10) == perUnit(-1, 10) { // NaN != NaN
		t.Fatal("unknown CPU gave a number")
	}
}

func TestLockMachineIsExclusive(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	var out bytes.Buffer
	unlock, err := lockMachine(context.Background(), &out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := lockMachine(ctx, &out); err == nil {
		t.Fatal("second lock taken while the first is held")
	}
	if !strings.Contains(out.String(), "waiting") {
		t.Fatalf("no waiting message: %q", out.String())
	}
	unlock()
	unlock2, err := lockMachine(context.Background(), &out)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}

func TestHandshakeTargetUsesMeasuredRateWhenServersSaturate(t *testing.T) {
	res := synthetic()
	for _, h := range res.Handshakes {
		for _, r := range h.Results {
			if r != nil {
				r.ClientCPU = 0.95 // busy client, but the servers were busy too
			}
			h.CPU = append(h.CPU, 0.95)
		}
	}
	var buf bytes.Buffer
	report(&buf, res)
	want := "MISS  full handshakes/s sidecar-edge >= 1.0x nginx                0.95x measured conn/s"
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("report lacks %q:\n%s", want, buf.String())
	}
}

// TestReportHTTPMode checks the http-mode section and its targets: req/s and
// CPU per request as medians of per-round ratios to the nginx row of the
// same protocol, and a dropped tcp-mode row shown as such.
func TestReportHTTPMode(t *testing.T) {
	row := func(key, label, client, ref string, cpuPerReqUS float64, rps ...float64) *Row {
		r := &Row{Key: key, Label: label, Client: client, Ref: ref, Results: map[int][]*load.Result{}, CPU: map[int][]float64{}}
		for _, c := range connCounts {
			for _, v := range rps {
				r.Results[c] = append(r.Results[c], &load.Result{RPS: v, Requests: int64(v), P50: 100 * time.Microsecond, P99: 900 * time.Microsecond})
				r.CPU[c] = append(r.CPU[c], v*cpuPerReqUS/1e6)
			}
		}
		return r
	}
	res := &Results{
		Machine: "test", Tools: "test", Duration: "1s", Rounds: 3, Workers: 4, Conns: connCounts,
		Rows: []*Row{
			row("nginx-tls", "nginx TLS", "wrk", "", 20, 30000, 30000, 30000),
			row("sidecar-edge", "sidecar edge TLS (SNI)", "wrk", "nginx-tls", 15, 36000, 36000, 36000),
			// Per-round ratios 1.1, 1.2, 0.9: median 1.1; CPU/req 16 vs 20 us: 0.8.
			row("sidecar-http-h1", "sidecar http mode TLS", "wrk", "nginx-tls", 16, 33000, 36000, 27000),
			row("nginx-h2", "nginx TLS h2", "h2load", "", 25, 20000, 20000, 20000),
			row("sidecar-http-h2", "sidecar http mode h2", "h2load", "nginx-h2", 30, 18000, 18000, 18000),
			{Key: "sidecar-tcp-h2", Label: "sidecar tcp mode h2 (h2c app)", Client: "h2load", Ref: "nginx-h2", Err: "warm-up failed: refused"},
		},
	}
	var buf bytes.Buffer
	report(&buf, res)
	// Compare with runs of spaces squeezed: the columns' widths do not matter.
	var lines []string
	for _, l := range strings.Split(buf.String(), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{
		"http mode (--mode http",
		"HTTP/1.1 (wrk) 32 sidecar http mode TLS 33000 1.10x 100us 900us 16.0us 0.80x 0",
		"HTTP/1.1 (wrk) 1 sidecar edge TLS (SNI) 36000 1.20x 100us 900us 15.0us 0.75x 0",
		"h2 (h2load) 32 nginx TLS h2 20000 - 100us 900us 25.0us - 0",
		"h2 (h2load) 32 sidecar http mode h2 18000 0.90x 100us 900us 30.0us 1.20x 0",
		"h2 (h2load) 1 sidecar tcp mode h2 (h2c app) - - - - - - - dropped: warm-up failed: refused",
		"PASS http mode req/s at 32 conns >= 1.0x nginx, HTTP/1.1 (wrk) 1.10x",
		"MISS http mode req/s at 32 conns >= 1.0x nginx, h2 (h2load) 0.90x",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
