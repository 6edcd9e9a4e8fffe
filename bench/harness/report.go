package harness

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/podtls/podtls/bench/stats"
)

// series returns per-round values of one row at one concurrency; NaN where a
// round failed, so ratios stay paired by round.
func (r *Row) series(conns int, pick func(rps, p50us, p99us float64) float64) []float64 {
	var out []float64
	for _, res := range r.Results[conns] {
		if res == nil {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, pick(res.RPS, float64(res.P50.Microseconds()), float64(res.P99.Microseconds())))
	}
	return out
}

// cpuSeries is the proxy CPU per request in each round, in us; NaN where
// the round failed or the CPU time is unknown, so ratios stay paired by round.
func (r *Row) cpuSeries(conns int) []float64 {
	var out []float64
	for i, res := range r.Results[conns] {
		if res != nil && i < len(r.CPU[conns]) && r.CPU[conns][i] >= 0 && res.Requests > 0 {
			out = append(out, r.CPU[conns][i]/float64(res.Requests)*1e6)
			continue
		}
		out = append(out, math.NaN())
	}
	return out
}

func rps(v, _, _ float64) float64 { return v }
func p50(_, v, _ float64) float64 { return v }
func p99(_, _, v float64) float64 { return v }

// summary is what the report prints for one row at one concurrency.
type summary struct {
	rps, p50, p99        float64 // medians
	xDirect, xRef        float64 // medians of per-round ratios
	addedP50             float64 // median per-round p50 minus the direct row's, in us
	cpuPerReq            float64 // median proxy CPU per request, us
	cpuXRef              float64 // median of per-round CPU/request ratios to the ref row
	errors               int64
	measured, roundsMiss int
}

func summarize(r *Row, byKey map[string]*Row, conns int) summary {
	s := summary{
		rps: stats.Median(r.series(conns, rps)),
		p50: stats.Median(r.series(conns, p50)),
		p99: stats.Median(r.series(conns, p99)),
	}
	s.xDirect, s.xRef, s.addedP50 = math.NaN(), math.NaN(), math.NaN()
	if b := byKey[r.Base]; b != nil {
		s.xDirect = stats.Median(stats.PairedRatios(r.series(conns, rps), b.series(conns, rps)))
		mine, base := r.series(conns, p50), b.series(conns, p50)
		var diffs []float64
		for i := range min(len(mine), len(base)) {
			diffs = append(diffs, mine[i]-base[i])
		}
		s.addedP50 = stats.Median(diffs)
	}
	s.cpuXRef = math.NaN()
	if ref := byKey[r.Ref]; ref != nil {
		s.xRef = stats.Median(stats.PairedRatios(r.series(conns, rps), ref.series(conns, rps)))
		s.cpuXRef = stats.Median(stats.PairedRatios(r.cpuSeries(conns), ref.cpuSeries(conns)))
	}
	s.cpuPerReq = stats.Median(r.cpuSeries(conns))
	for _, res := range r.Results[conns] {
		if res == nil {
			s.roundsMiss++
			continue
		}
		s.measured++
		s.errors += res.Errors
	}
	return s
}

// hsPerCore is connections per second of server CPU (proxy + backend) in
// each round: the rate one saturated server core would reach.
func hsPerCore(h *HSRow) []float64 {
	var out []float64
	for i, r := range h.Results {
		if r == nil || i >= len(h.CPU) || !(h.CPU[i] > 0) {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, float64(r.Conns)/h.CPU[i])
	}
	return out
}

// serverBusy is the median CPU the server side (proxy + backend) used per
// second of the run, in cores.
func serverBusy(h *HSRow) float64 {
	var out []float64
	for i, r := range h.Results {
		if r != nil && i < len(h.CPU) && h.CPU[i] >= 0 && r.Elapsed > 0 {
			out = append(out, h.CPU[i]/r.Elapsed.Seconds())
		}
	}
	return stats.Median(out)
}

// clientBound reports whether the handshake client used most of its core in
// any round while the server still had CPU to spare: the measured rate is
// then the client's limit, not the server's.
func clientBound(h *HSRow) bool {
	if serverBusy(h) >= 0.9 {
		return false
	}
	for _, r := range h.Results {
		if r != nil && r.ClientCPU >= 0.85 {
			return true
		}
	}
	return false
}

func hsSeries(h *HSRow) []float64 {
	var out []float64
	for _, r := range h.Results {
		if r == nil {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, r.PerSecond())
	}
	return out
}

func report(w io.Writer, res *Results) {
	byKey := map[string]*Row{}
	for _, r := range res.Rows {
		byKey[r.Key] = r
	}
	pin := "not pinned (taskset missing or 1 CPU)"
	if res.Pinned {
		pin = "load generators pinned to CPU0, nginx/sidecars/backend to CPU1"
	}
	fmt.Fprintf(w, "\n== podtls data-plane benchmark ==\n")
	fmt.Fprintf(w, "machine: %s\ntools:   %s\n", res.Machine, res.Tools)
	fmt.Fprintf(w, "load average: %s before, %s after; %s, %s; %d rounds x %s per measurement, interleaved; took %s\n",
		res.LoadBefore, res.LoadAfter, pin, res.Sched, res.Rounds, res.Duration, res.Elapsed)
	fmt.Fprintf(w, "numbers are medians over rounds; ratios are taken within a round, then the median; x ref = vs the matching nginx row, same client\n")

	for _, conns := range res.Conns {
		fmt.Fprintf(w, "\nkeep-alive, %d connection(s): HTTP/1.1 (wrk, fortio), h2 (h2load, one stream per connection); backend nginx 100-byte answer\n", conns)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "row\tclient\treq/s\tx direct\tx ref\tp50\tp99\tp50 added\tproxy CPU/req\tCPU x ref\terrors\t")
		for _, r := range res.Rows {
			if r.Err != "" {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t  dropped: %s\n", r.Label, r.Client, r.Err)
				continue
			}
			s := summarize(r, byKey, conns)
			ref := "-"
			if byKey[r.Ref] != nil {
				ref = ratio(s.xRef) + " " + byKey[r.Ref].Label
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.Label, r.Client, num(s.rps), ratio(s.xDirect), ref,
				usf(s.p50), usf(s.p99), signedUS(s.addedP50), usDec(s.cpuPerReq), ratio(s.cpuXRef), s.errors)
		}
		tw.Flush()
	}
	reportHTTPMode(w, res, byKey)

	fmt.Fprintf(w, "\nfull handshakes: new TLS 1.3 connection each (no session cache), X25519, one request, %d client goroutines\n", res.Workers)
	hsByKey := map[string]*HSRow{}
	for _, h := range res.Handshakes {
		hsByKey[h.Key] = h
	}
	fmt.Fprintf(w, "per core = connections per CPU-second of the server (proxy + backend): the rate one saturated core would reach;\n"+
		"server busy = cores the server side used; limit: which side ran out of CPU (server >= 0.9 cores, client >= 0.85)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tconn/s\tx ref\tper core\tx ref\tserver busy\tlimit\t")
	for _, h := range res.Handshakes {
		if h.Err != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t  failed: %s\n", h.Label, h.Err)
			continue
		}
		ref, refCore := "-", "-"
		if r := hsByKey[h.Ref]; r != nil {
			ref = ratio(stats.Median(stats.PairedRatios(hsSeries(h), hsSeries(r))))
			refCore = ratio(stats.Median(stats.PairedRatios(hsPerCore(h), hsPerCore(r)))) + " " + r.Label
		}
		limit := "-"
		switch busy := serverBusy(h); {
		case busy >= 0.9:
			limit = "server"
		case clientBound(h):
			limit = "client"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", h.Label, num(stats.Median(hsSeries(h))), ref,
			num(stats.Median(hsPerCore(h))), refCore, cores(serverBusy(h)), limit)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nresident memory: VmRSS (of which anonymous: heap, stacks; the rest is mapped binary and libraries)\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tafter start\t(anon)\tafter load\t(anon)\t")
	for _, m := range res.Memory {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", m.Label, mb(m.StartKB), mb(m.StartAnon), mb(m.AfterLoad), mb(m.AfterAnon))
	}
	tw.Flush()

	fmt.Fprintf(w, "\ntargets (benchmarks do not fail the build)\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range targets(res, byKey, hsByKey) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", t.verdict, t.what, t.got)
	}
	tw.Flush()
}

type target struct{ what, got, verdict string }

func targets(res *Results, byKey map[string]*Row, hsByKey map[string]*HSRow) []target {
	var out []target
	at := func(key string, conns int) (summary, bool) {
		r := byKey[key]
		if r == nil || r.Err != "" {
			return summary{}, false
		}
		return summarize(r, byKey, conns), true
	}
	nan := math.NaN()

	x := nan
	if s, ok := at("sidecar-mtls", 32); ok {
		x = s.xRef
	}
	out = append(out, target{"inbound mTLS req/s at 32 conns >= 1.3x nginx mTLS (fortio)", ratio(x), stats.Verdict(x, 1.3, false)})
	for _, g := range httpModeGroups {
		x := nan
		if s, ok := at(g.http, 32); ok {
			x = s.xRef
		}
		out = append(out, target{fmt.Sprintf("http mode req/s at 32 conns >= 1.0x nginx, %s", g.proto), ratio(x), stats.Verdict(x, 1.0, false)})
	}

	for _, pair := range [][2]string{{"sidecar-edge", "nginx-tls"}, {"sidecar-mtls", "nginx-mtls"}} {
		mine, theirs := nan, nan
		if s, ok := at(pair[0], 1); ok {
			mine = s.addedP50
		}
		if s, ok := at(pair[1], 1); ok {
			theirs = s.addedP50
		}
		v := stats.Verdict(mine, theirs, true)
		if math.IsNaN(theirs) {
			v = "n/a"
		}
		out = append(out, target{fmt.Sprintf("1-conn added p50: %s <= %s", label(byKey, pair[0]), label(byKey, pair[1])),
			signedUS(mine) + " vs " + signedUS(theirs), v})
	}

	for _, hs := range []struct {
		key  string
		want float64
	}{{"hs-sidecar-edge", 1.0}, {"hs-sidecar-mtls", 2.0}} {
		x, basis := nan, "measured conn/s"
		if h := hsByKey[hs.key]; h != nil && h.Err == "" {
			if r := hsByKey[h.Ref]; r != nil && r.Err == "" {
				x = stats.Median(stats.PairedRatios(hsSeries(h), hsSeries(r)))
				// A client that ran out of CPU caps both rates alike; the
				// server CPU per connection still tells them apart.
				if clientBound(h) || clientBound(r) {
					x = stats.Median(stats.PairedRatios(hsPerCore(h), hsPerCore(r)))
					basis = "per server core (client-bound)"
				}
			}
		}
		out = append(out, target{fmt.Sprintf("full handshakes/s %s >= %.1fx nginx", strings.TrimPrefix(hs.key, "hs-"), hs.want),
			ratio(x) + " " + basis, stats.Verdict(x, hs.want, false)})
	}

	rss := nan
	for _, m := range res.Memory {
		if strings.HasPrefix(m.Label, "sidecar (inbound") && m.StartKB > 0 {
			rss = float64(m.StartKB) / 1024
		}
	}
	rssText := "-"
	if !math.IsNaN(rss) {
		rssText = fmt.Sprintf("%.1f MB", rss)
	}
	out = append(out, target{"idle RSS of the sidecar after start <= 10 MB", rssText, stats.Verdict(rss, 10, true)})
	return out
}

func label(byKey map[string]*Row, key string) string {
	if r := byKey[key]; r != nil {
		return r.Label
	}
	return key
}

func cores(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

func ratio(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

func usf(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0fus", v)
}

func usDec(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1fus", v)
}

func signedUS(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%+.0fus", v)
}

func mb(kb int64) string {
	if kb < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MB", float64(kb)/1024)
}
