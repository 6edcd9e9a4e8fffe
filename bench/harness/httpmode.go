package harness

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// httpModeGroup is one protocol of the http-mode comparison: nginx doing the
// same job (TLS termination, proxy_pass with upstream keep-alive), the
// sidecar in http mode, and the sidecar in tcp mode.
type httpModeGroup struct {
	proto            string
	nginx, http, tcp string // row keys
}

var httpModeGroups = []httpModeGroup{
	{proto: "HTTP/1.1 (wrk)", nginx: "nginx-tls", http: "sidecar-http-h1", tcp: "sidecar-edge"},
	{proto: "h2 (h2load)", nginx: "nginx-h2", http: "sidecar-http-h2", tcp: "sidecar-tcp-h2"},
}

// reportHTTPMode prints the http-mode rows next to nginx and tcp mode, by
// protocol and connection count; nothing when no http-mode row was measured.
func reportHTTPMode(w io.Writer, res *Results, byKey map[string]*Row) {
	measured := false
	for _, g := range httpModeGroups {
		measured = measured || byKey[g.http] != nil
	}
	if !measured {
		return
	}
	fmt.Fprintf(w, "\nhttp mode (--mode http: TLS from the client, HTTP/1.1 to the backend over a keep-alive pool) vs nginx vs tcp mode\n"+
		"x nginx, CPU x nginx: medians of per-round ratios; tcp mode splices bytes (for h2: to the backend's h2c port)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\tconns\trow\treq/s\tx nginx\tp50\tp99\tproxy CPU/req\tCPU x nginx\terrors\t")
	for _, g := range httpModeGroups {
		for _, conns := range res.Conns {
			for _, key := range []string{g.nginx, g.http, g.tcp} {
				r := byKey[key]
				switch {
				case r == nil:
					continue
				case r.Err != "":
					fmt.Fprintf(tw, "%s\t%d\t%s\t-\t-\t-\t-\t-\t-\t-\t  dropped: %s\n", g.proto, conns, r.Label, r.Err)
					continue
				}
				s := summarize(r, byKey, conns)
				x, cx := "-", "-"
				if r.Ref == g.nginx {
					x, cx = ratio(s.xRef), ratio(s.cpuXRef)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", g.proto, conns, r.Label, num(s.rps), x,
					usf(s.p50), usf(s.p99), usDec(s.cpuPerReq), cx, s.errors)
			}
		}
	}
	tw.Flush()
}
