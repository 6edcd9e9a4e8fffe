// Package load drives the external HTTP load generators of the benchmark (wrk
// for HTTP/1.1 rows without client certificates, fortio for rows with them,
// h2load for HTTP/2 rows) and parses what they print into one Result type.
package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Result is one measurement of one target.
type Result struct {
	RPS      float64       `json:"rps"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"` // connect/read/write errors, timeouts and non-2xx answers
	// Sockets the client opened (fortio only; 0 = unknown). More sockets than
	// connections means the server closed keep-alive connections mid-run.
	Sockets int64 `json:"sockets,omitempty"`
}

// wrkMarker starts the line the Lua script prints; everything else wrk prints is ignored.
const wrkMarker = "PODTLS-BENCH"

// WrkScript is the Lua script handed to wrk. It resolves every host to
// 127.0.0.1, so the URL can carry a TLS server name (SNI) that DNS does not
// know, and prints exact microsecond percentiles in one parseable line.
const WrkScript = `function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("` + wrkMarker + ` requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// ParseWrk reads the line WrkScript prints.
func ParseWrk(out []byte) (Result, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, wrkMarker+" ")
		if !ok {
			continue
		}
		fields := map[string]int64{}
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return Result{}, fmt.Errorf("wrk summary: field %q has no '='", kv)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Result{}, fmt.Errorf("wrk summary: field %s: %w", k, err)
			}
			fields[k] = n
		}
		for _, k := range []string{"requests", "duration_us", "errors", "p50_us", "p99_us"} {
			if _, ok := fields[k]; !ok {
				return Result{}, fmt.Errorf("wrk summary: field %s missing", k)
			}
		}
		if fields["duration_us"] <= 0 {
			return Result{}, errors.New("wrk summary: duration is not positive")
		}
		return Result{
			RPS:      float64(fields["requests"]) / (float64(fields["duration_us"]) / 1e6),
			P50:      time.Duration(fields["p50_us"]) * time.Microsecond,
			P99:      time.Duration(fields["p99_us"]) * time.Microsecond,
			Requests: fields["requests"],
			Errors:   fields["errors"],
		}, nil
	}
	return Result{}, fmt.Errorf("wrk output has no %s line", wrkMarker)
}

// fortioReport is the part of fortio's -json output the benchmark reads.
type fortioReport struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
	RetCodes    map[string]int64
	SocketCount int64
}

// ParseFortio reads fortio's JSON result (fortio load -json FILE).
func ParseFortio(js []byte) (Result, error) {
	var rep fortioReport
	if err := json.Unmarshal(js, &rep); err != nil {
		return Result{}, fmt.Errorf("fortio json: %w", err)
	}
	if rep.DurationHistogram.Count == 0 {
		return Result{}, errors.New("fortio json: no requests recorded")
	}
	r := Result{RPS: rep.ActualQPS, Requests: rep.DurationHistogram.Count, Sockets: rep.SocketCount}
	found := 0
	for _, p := range rep.DurationHistogram.Percentiles {
		d := time.Duration(p.Value * float64(time.Second))
		switch p.Percentile {
		case 50:
			r.P50, found = d, found+1
		case 99:
			r.P99, found = d, found+1
		}
	}
	if found != 2 {
		return Result{}, errors.New("fortio json: p50 or p99 missing (run with -p 50,99)")
	}
	var ok int64
	for code, n := range rep.RetCodes {
		if strings.HasPrefix(code, "2") {
			ok += n
		}
	}
	r.Errors = r.Requests - ok
	return r, nil
}

// Runner runs the load tools, each prefixed by Pin (e.g. taskset -c 0).
type Runner struct {
	WrkBin, FortioBin, H2loadBin string
	Pin                          []string
	WrkScript                    string // path of a file holding WrkScript
	TmpDir                       string // where fortio writes its JSON
}

// Target is what a load tool is pointed at.
type Target struct {
	URL string
	// Client certificate and CA for fortio; empty for plaintext and server-only TLS.
	Cert, Key, CA string
}

// Wrk runs wrk with one thread (the load core is one CPU) and conns connections.
func (r Runner) Wrk(ctx context.Context, t Target, conns int, d time.Duration) (Result, error) {
	if t.Cert != "" {
		return Result{}, errors.New("wrk cannot send client certificates; use fortio")
	}
	args := []string{r.WrkBin, "-t1", "-c" + strconv.Itoa(conns), "-d" + seconds(d),
		"--timeout", "5s", "-s", r.WrkScript, t.URL}
	out, err := r.run(ctx, d, args)
	if err != nil {
		return Result{}, fmt.Errorf("wrk %s: %w", t.URL, err)
	}
	res, err := ParseWrk(out)
	if err != nil {
		return Result{}, fmt.Errorf("wrk %s: %w\n%s", t.URL, err, tail(out))
	}
	return res, nil
}

// Fortio runs fortio load at maximum rate (-qps 0) on conns connections.
func (r Runner) Fortio(ctx context.Context, t Target, conns int, d time.Duration) (Result, error) {
	f, err := os.CreateTemp(r.TmpDir, "fortio-*.json")
	if err != nil {
		return Result{}, fmt.Errorf("fortio result file: %w", err)
	}
	jsonPath := f.Name()
	if err := f.Close(); err != nil {
		return Result{}, fmt.Errorf("close %s: %w", jsonPath, err)
	}
	defer os.Remove(jsonPath)
	args := []string{r.FortioBin, "load", "-quiet", "-qps", "0", "-c", strconv.Itoa(conns),
		"-t", seconds(d), "-p", "50,99", "-r", "0.000001", "-timeout", "5s",
		"-resolve", "127.0.0.1", "-json", jsonPath}
	if t.CA != "" {
		args = append(args, "-cacert", t.CA)
	}
	if t.Cert != "" {
		args = append(args, "-cert", t.Cert, "-key", t.Key)
	}
	args = append(args, t.URL)
	if out, err := r.run(ctx, d, args); err != nil {
		return Result{}, fmt.Errorf("fortio %s: %w\n%s", t.URL, err, tail(out))
	}
	js, err := os.ReadFile(jsonPath)
	if err != nil {
		return Result{}, fmt.Errorf("read fortio result: %w", err)
	}
	return ParseFortio(js)
}

func (r Runner) run(ctx context.Context, d time.Duration, args []string) ([]byte, error) {
	// Generous bound: the tool's own duration plus start-up and connection draining.
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	full := append(append([]string{}, r.Pin...), args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%w\n%s", err, tail(out))
	}
	return out, nil
}

// seconds renders d in whole seconds (at least 1): wrk reads integers only.
func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))) + "s"
}

// tail keeps the end of a tool's output for error messages.
func tail(b []byte) string {
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}
