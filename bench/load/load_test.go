package load

import (
	"os"
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
