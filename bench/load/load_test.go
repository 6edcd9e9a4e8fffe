package load

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    Result
		wantErr string
	}{
		{
			name: "summary among wrk's own lines",
			out: "Running 5s test @ https://edge.bench.test:4443/\n  1 threads and 32 connections\n" +
				"PODTLS-BENCH requests=250000 duration_us=5000000 errors=3 p50_us=120 p99_us=900\n",
			want: Result{RPS: 50000, P50: 120 * time.Microsecond, P99: 900 * time.Microsecond, Requests: 250000, Errors: 3},
		},
		{name: "no summary line", out: "Running 5s test\n", wantErr: "no PODTLS-BENCH line"},
		{name: "missing field", out: "PODTLS-BENCH requests=1 duration_us=1 errors=0 p50_us=1\n", wantErr: "p99_us missing"},
		{name: "not a number", out: "PODTLS-BENCH requests=x duration_us=1 errors=0 p50_us=1 p99_us=1\n", wantErr: "field requests"},
		{name: "no equals sign", out: "PODTLS-BENCH requests\n", wantErr: "has no '='"},
		{name: "zero duration", out: "PODTLS-BENCH requests=1 duration_us=0 errors=0 p50_us=1 p99_us=1\n", wantErr: "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWrk([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseFortioRealOutput(t *testing.T) {
	js, err := os.ReadFile("testdata/fortio-keepalive.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseFortio(js)
	if err != nil {
		t.Fatal(err)
	}
	if got.Requests != 15335 || got.Errors != 0 || got.Sockets != 2 {
		t.Fatalf("requests/errors/sockets = %d/%d/%d, want 15335/0/2", got.Requests, got.Errors, got.Sockets)
	}
	if int(got.RPS) != 15334 {
		t.Fatalf("RPS = %f, want 15334.5", got.RPS)
	}
	if got.P50 != 48074*time.Nanosecond || got.P99 != 2503191*time.Nanosecond {
		t.Fatalf("p50/p99 = %s/%s", got.P50, got.P99)
	}
}

func TestParseFortio(t *testing.T) {
	tests := []struct {
		name       string
		js         string
		wantErrors int64
		wantErr    string
	}{
		{
			name:       "non-2xx and socket errors count as errors",
			js:         `{"ActualQPS":10,"DurationHistogram":{"Count":10,"Percentiles":[{"Percentile":50,"Value":0.001},{"Percentile":99,"Value":0.002}]},"RetCodes":{"200":7,"503":2,"-1":1}}`,
			wantErrors: 3,
		},
		{name: "no requests", js: `{"ActualQPS":0,"DurationHistogram":{"Count":0}}`, wantErr: "no requests"},
		{name: "p99 missing", js: `{"DurationHistogram":{"Count":1,"Percentiles":[{"Percentile":50,"Value":0.001}]}}`, wantErr: "p99 missing"},
		{name: "not json", js: `Running`, wantErr: "fortio json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFortio([]byte(tt.js))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Errors != tt.wantErrors {
				t.Fatalf("errors = %d, want %d", got.Errors, tt.wantErrors)
			}
		})
	}
}

func TestSecondsWholeForWrk(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Second: "1s", 1500 * time.Millisecond: "2s", 0: "1s", 10 * time.Second: "10s"} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%s) = %s, want %s", d, got, want)
		}
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add([]byte("PODTLS-BENCH requests=1 duration_us=1 errors=0 p50_us=1 p99_us=1\n"))
	f.Add([]byte("PODTLS-BENCH requests=-1 duration_us=99999999999999999999 errors= p50_us p99_us=1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseWrk(b)
		if err == nil && r.RPS < 0 && r.Requests >= 0 {
			t.Fatalf("negative rate from non-negative count: %+v", r)
		}
	})
}

func FuzzParseFortio(f *testing.F) {
	if js, err := os.ReadFile("testdata/fortio-keepalive.json"); err == nil {
		f.Add(js)
	}
	f.Add([]byte(`{"DurationHistogram":{"Count":1,"Percentiles":[{"Percentile":50,"Value":1e300},{"Percentile":99,"Value":-1}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseFortio(b) // must not panic
	})
}

func TestParseH2load(t *testing.T) {
	out, err := os.ReadFile("testdata/h2load.out")
	if err != nil {
		t.Fatal(err)
	}
	// 100 requests of 1..100 us, in log order (not sorted).
	var log strings.Builder
	for i := 100; i >= 1; i-- {
		log.WriteString("1796252208428671\t200\t" + strconv.Itoa(i) + "\n")
	}
	got, err := ParseH2load(out, []byte(log.String()))
	if err != nil {
		t.Fatal(err)
	}
	// failed 1 + errored 1 + (done 24509 - 2xx 24506 = 3) not-2xx.
	want := Result{RPS: 24509, P50: 50 * time.Microsecond, P99: 99 * time.Microsecond, Requests: 24509, Errors: 5}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	for _, tt := range []struct{ name, out, log, wantErr string }{
		{"no summary", "starting benchmark...\n", "1\t200\t5\n", "no finished/requests/status codes"},
		{"nothing done", "finished in 1.00s, 0.00 req/s, 0B/s\nrequests: 0 total, 0 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout\nstatus codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx\n", "", "no requests done"},
		{"bad count", "finished in 1.00s, 1.00 req/s, 0B/s\nrequests: x total\nstatus codes: 1 2xx\n", "1\t200\t5\n", "requests: x total"},
		{"empty log", string(out), "", "no requests recorded"},
		{"bad log line", string(out), "1 200 5\n", "3 tab-separated columns"},
		{"bad log duration", string(out), "1\t200\t-4\n", "bad duration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseH2load([]byte(tt.out), []byte(tt.log))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	one := []time.Duration{7}
	if percentile(one, 50) != 7 || percentile(one, 99) != 7 {
		t.Error("one value is every percentile")
	}
	four := []time.Duration{1, 2, 3, 4}
	if got := percentile(four, 50); got != 2 {
		t.Errorf("p50 of 1..4 = %v, want 2 (nearest rank)", got)
	}
	if got := percentile(four, 99); got != 4 {
		t.Errorf("p99 of 1..4 = %v, want 4", got)
	}
}
