package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParseH2load reads h2load's summary (stdout) and its per-request log
// (--log-file: start time, status, microseconds until the end of the
// response, tab-separated) into a Result. h2load prints no percentiles, so
// p50 and p99 come from the log.
func ParseH2load(out, log []byte) (Result, error) {
	var r Result
	var haveRPS, haveReqs, haveCodes bool
	var done, ok2xx int64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "finished in "):
			// finished in 5.00s, 36367.40 req/s, 4.66MB/s
			f := strings.Split(line, ",")
			if len(f) < 2 {
				return Result{}, fmt.Errorf("h2load summary: %q", line)
			}
			v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(f[1]), " req/s"), 64)
			if err != nil {
				return Result{}, fmt.Errorf("h2load summary %q: %w", line, err)
			}
			r.RPS, haveRPS = v, true
		case strings.HasPrefix(line, "requests: "):
			// requests: 100 total, 101 started, 100 done, 99 succeeded, 1 failed, 0 errored, 0 timeout
			n, err := counts(strings.TrimPrefix(line, "requests: "))
			if err != nil {
				return Result{}, fmt.Errorf("h2load summary %q: %w", line, err)
			}
			done = n["done"]
			r.Requests = done
			r.Errors = n["failed"] + n["errored"] + n["timeout"]
			haveReqs = true
		case strings.HasPrefix(line, "status codes: "):
			n, err := counts(strings.TrimPrefix(line, "status codes: "))
			if err != nil {
				return Result{}, fmt.Errorf("h2load summary %q: %w", line, err)
			}
			ok2xx, haveCodes = n["2xx"], true
		}
	}
	if !haveRPS || !haveReqs || !haveCodes {
		return Result{}, errors.New("h2load output has no finished/requests/status codes lines")
	}
	if done == 0 {
		return Result{}, errors.New("h2load: no requests done")
	}
	// Answers that were not 2xx count as errors too (failed already counts
	// requests that got no answer).
	if bad := done - ok2xx; bad > 0 {
		r.Errors += bad
	}
	lat, err := h2loadLatencies(log)
	if err != nil {
		return Result{}, err
	}
	r.P50, r.P99 = percentile(lat, 50), percentile(lat, 99)
	return r, nil
}

// counts reads "100 total, 101 started, 0 failed" into name -> number.
func counts(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return nil, fmt.Errorf("field %q: want NUMBER NAME", strings.TrimSpace(part))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", strings.TrimSpace(part), err)
		}
		out[f[1]] = n
	}
	return out, nil
}

// h2loadLatencies returns the request durations of an h2load log, sorted.
func h2loadLatencies(log []byte) ([]time.Duration, error) {
	var lat []time.Duration
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("h2load log line %q: want 3 tab-separated columns", line)
		}
		v, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("h2load log line %q: bad duration", line)
		}
		lat = append(lat, time.Duration(v)*time.Microsecond)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("h2load log: %w", err)
	}
	if len(lat) == 0 {
		return nil, errors.New("h2load log: no requests recorded")
	}
	slices.Sort(lat)
	return lat, nil
}

// percentile is the nearest-rank percentile p of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// H2load runs h2load (one thread: the load core is one CPU) with conns
// connections and one stream at a time on each, like a keep-alive HTTP/1.1
// client, for d. It connects to 127.0.0.1 whatever the URL's host, which
// stays the TLS server name.
func (r Runner) H2load(ctx context.Context, t Target, conns int, d time.Duration) (Result, error) {
	if t.Cert != "" {
		return Result{}, errors.New("h2load cannot send client certificates")
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return Result{}, fmt.Errorf("h2load target: %w", err)
	}
	f, err := os.CreateTemp(r.TmpDir, "h2load-*.log")
	if err != nil {
		return Result{}, fmt.Errorf("h2load log file: %w", err)
	}
	logPath := f.Name()
	if err := f.Close(); err != nil {
		return Result{}, fmt.Errorf("close %s: %w", logPath, err)
	}
	defer os.Remove(logPath)
	args := []string{r.H2loadBin, "-t1", "-c" + strconv.Itoa(conns), "-m1",
		"-D", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))),
		"--connect-to=127.0.0.1:" + u.Port(), "--log-file=" + logPath, t.URL}
	out, err := r.run(ctx, d, args)
	if err != nil {
		return Result{}, fmt.Errorf("h2load %s: %w", t.URL, err)
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		return Result{}, fmt.Errorf("read h2load log: %w", err)
	}
	res, err := ParseH2load(out, log)
	if err != nil {
		return Result{}, fmt.Errorf("h2load %s: %w\n%s", t.URL, err, tail(out))
	}
	return res, nil
}
