package status

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
)

// WriteTable renders one line per pod. wide adds the full identity and the
// listeners and does not fit the lines to 80 columns.
func (r Report) WriteTable(w io.Writer, now time.Time, wide bool) error {
	header := []string{"POD", "SIDECAR", "REASON", "SERVICE-ACCOUNT", "MESH-CERT"}
	if wide {
		header = []string{"NAMESPACE", "POD", "SIDECAR", "REASON", "IDENTITY", "MESH-CERT", "SERIAL", "INBOUND", "UPSTREAMS", "EXTERNAL"}
	}
	rows := make([][]string, 0, len(r.Pods))
	allNamespaces := false
	for _, p := range r.Pods {
		allNamespaces = allNamespaces || p.Namespace != r.Pods[0].Namespace
	}
	for _, p := range r.Pods {
		sidecar := "no"
		switch {
		case p.Injected:
			sidecar = "yes"
		case p.Missing:
			sidecar = "MISSING"
		}
		cert, serial := "-", "-"
		if p.Live != nil {
			switch {
			case p.Live.Error != "":
				cert = "unreachable"
			case p.Live.Mesh != nil:
				cert = remaining(p.Live.Mesh.NotAfter, now)
				serial = p.Live.Mesh.Serial
			default:
				cert = "none yet"
			}
		}
		sa := "-"
		if i := strings.LastIndex(p.Identity, "/sa/"); i >= 0 {
			sa = p.Identity[i+4:]
		}
		reason := strings.Join(p.Reasons, ",")
		if wide {
			rows = append(rows, []string{p.Namespace, p.Name, sidecar, reason, dash(p.Identity), cert, serial,
				dash(strings.Join(p.Inbound, ",")), dash(strings.Join(p.Upstreams, ",")), dash(externalHosts(p))})
			continue
		}
		name := p.Name
		if allNamespaces {
			name = p.Namespace + "/" + p.Name
		}
		rows = append(rows, []string{name, sidecar, reason, sa, cert})
	}
	width := output.Width
	if wide {
		width = 1 << 20
	}
	if err := output.Table(w, width, header, rows); err != nil {
		return err
	}
	// A bypass is never a column value: one line per exposed port, with the fix.
	var lines []string
	for _, p := range r.Pods {
		for _, l := range p.bypassLines() {
			lines = append(lines, output.Wrap(p.Namespace+"/"+p.Name+": "+l, width, "", "  ")...)
		}
	}
	if len(lines) > 0 {
		lines = append([]string{""}, lines...)
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	if len(r.Workloads) > 0 {
		if _, err := fmt.Fprintln(w, "\nExternal workloads (podtls workload register):"); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
		return WriteWorkloads(w, r.Workloads, now)
	}
	return nil
}

// bypassLines says, per exposed app port, where it is reachable and the fix.
func (p Pod) bypassLines() []string {
	if p.Live == nil || p.Live.Plaintext == nil {
		return nil
	}
	var out []string
	for _, e := range p.Live.Plaintext.Exposed() {
		out = append(out, fmt.Sprintf("PLAINTEXT BYPASS: app port %d is reachable without TLS at %s; %s",
			e.Port, strings.Join(e.Addresses, ", "), e.Fix))
	}
	return out
}

// plaintextLine is the Plaintext line of the details when nothing is exposed.
func (p Pod) plaintextLine() string {
	l := p.Live
	switch {
	case l.PlaintextError != "":
		return "unknown: " + l.PlaintextError
	case l.Plaintext == nil:
		return ""
	case !l.Plaintext.Enabled:
		return "not checked: " + l.Plaintext.Reason
	case l.Plaintext.CheckedAt.IsZero():
		return "not checked yet"
	}
	var ports, unknown []string
	for _, pt := range l.Plaintext.Ports {
		if pt.Error != "" {
			unknown = append(unknown, fmt.Sprintf("port %d unknown (%s)", pt.Port, pt.Error))
			continue
		}
		ports = append(ports, strconv.Itoa(pt.Port))
	}
	s := strings.Join(unknown, "; ")
	if len(ports) > 0 {
		s = strings.TrimSuffix("app ports "+strings.Join(ports, ", ")+" not reachable on the pod IP (loopback only); "+s, "; ")
	}
	return s
}

func externalHosts(p Pod) string {
	if p.External == nil {
		return ""
	}
	return strings.Join(p.External.Hosts, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// remaining is "2026-11-25 10:00Z (23h left)" in a compact form: "23h left".
func remaining(t, now time.Time) string {
	d := t.Sub(now)
	switch {
	case d <= 0:
		return "EXPIRED"
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd left", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh left", int(d.Hours()))
	default:
		return fmt.Sprintf("%dm left", int(d.Minutes()))
	}
}

// WriteDetail renders every pod as a block of "Key: value" lines fitted to
// 80 columns.
func (r Report) WriteDetail(w io.Writer, now time.Time, st output.Style) error {
	var lines []string
	const keyWidth = 13
	add := func(key, value string) {
		first := strings.Repeat(" ", keyWidth) // continuation of the previous key
		if key != "" {
			first = fmt.Sprintf("%-*s", keyWidth, key+":")
		}
		lines = append(lines, output.Wrap(value, output.Width, first, strings.Repeat(" ", keyWidth))...)
	}
	for i, p := range r.Pods {
		if i > 0 {
			lines = append(lines, "")
		}
		lines = append(lines, st.Bold(fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, p.Phase)))
		reasons := strings.Join(p.Reasons, ", ")
		switch {
		case p.Injected:
			s := "injected (" + reasons + ")"
			if p.SidecarMode != "" {
				s += ", " + p.SidecarMode + " sidecar, controller " + p.Version
			}
			add("Sidecar", s)
		case p.Missing:
			add("Sidecar", st.Mark(output.Fail)+" MISSING: the pod asks for it ("+reasons+
				") but was admitted without it; recreate the pod")
		default:
			add("Sidecar", "not injected ("+reasons+")")
		}
		if p.Identity != "" {
			id := p.Identity
			if p.IdentitySource != "" {
				id += " (" + p.IdentitySource + ")"
			}
			add("Identity", id)
		}
		switch {
		case p.Live == nil && p.Injected:
			add("Mesh cert", "known only to the sidecar: use --live")
		case p.Live != nil && p.Live.Error != "":
			add("Mesh cert", "unknown: "+p.Live.Error)
		case p.Live != nil && p.Live.Mesh == nil:
			add("Mesh cert", "none loaded yet (sidecar not ready)")
		case p.Live != nil:
			m := p.Live.Mesh
			add("Mesh cert", fmt.Sprintf("serial %s, expires %s (%s)", m.Serial, m.NotAfter.UTC().Format(time.RFC3339), remaining(m.NotAfter, now)))
		}
		if p.Live != nil && p.Live.Error == "" {
			if bl := p.bypassLines(); len(bl) > 0 {
				for _, l := range bl {
					add("Plaintext", st.Mark(output.Fail)+" "+l)
				}
			} else if l := p.plaintextLine(); l != "" {
				add("Plaintext", l)
			}
		}
		for _, n := range p.DNSNames {
			add("DNS name", n)
		}
		for _, in := range p.Inbound {
			add("Inbound", in)
		}
		for _, u := range p.Upstreams {
			add("Upstream", u)
		}
		if p.Injected || p.Missing {
			if len(p.Allow) == 0 {
				add("Allowed", "any identity of the trust domain")
			} else {
				add("Allowed", strings.Join(p.Allow, ", "))
			}
		}
		if a := p.AppFiles; a != nil {
			add("App files", fmt.Sprintf("%s (%s; %s; reload %s)", a.Path, strings.Join(a.Sources, ", "), strings.Join(a.Formats, ", "), a.Reload))
		}
		if p.Live != nil {
			for _, f := range p.Live.AppFiles {
				switch {
				case f.Error != "":
					add("", fmt.Sprintf("%s: %s %s (the previous files stay)", f.Source, st.Mark(output.Fail), f.Error))
				case f.Written:
					add("", fmt.Sprintf("%s: serial %s, written %s; last reload: %s", f.Source, f.Serial, f.WrittenAt.UTC().Format(time.RFC3339), orNone(f.LastReload)))
				default:
					add("", f.Source+": not written yet")
				}
			}
		}
		if e := p.External; e != nil {
			add("External", strings.Join(e.Hosts, ", "))
			switch {
			case !e.Found:
				add("", "Secret "+e.Secret+" not created yet (is an ACME issuer configured?)")
			case e.Status == nil || !e.Status.Issued():
				add("", "Secret "+e.Secret+": not issued yet")
			default:
				s := e.Status
				add("", fmt.Sprintf("Secret %s: issuer %s, serial %s, expires %s (%s), renew at %s",
					e.Secret, s.CertIssuer, s.Serial, s.NotAfter.UTC().Format(time.RFC3339), remaining(s.NotAfter, now),
					s.RenewAt.UTC().Format(time.RFC3339)))
			}
			if e.Status != nil && e.Status.LastError != "" {
				add("", fmt.Sprintf("%s last error (%d failures): %s", st.Mark(output.Fail), e.Status.Failures, e.Status.LastError))
			}
			if p.Live != nil {
				for _, c := range p.Live.External {
					add("", fmt.Sprintf("served by the sidecar: serial %s, expires %s", c.Serial, c.NotAfter.UTC().Format(time.RFC3339)))
				}
			}
			for _, r := range e.Records {
				add("", recordsLine(st, r, now))
			}
		}
		for _, pr := range p.Problems {
			add("Problem", pr)
		}
		for _, e := range p.Events {
			add("Event", fmt.Sprintf("%s %s (x%d, %s ago): %s", e.Type, e.Reason, e.Count, ago(now.Sub(e.Last)), e.Message))
		}
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	return nil
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orNone(s string) string {
	if s == "" {
		return "none yet"
	}
	return s
}

// recordsLine shows one Service's DNS records next to the certificate.
func recordsLine(st output.Style, r Records, now time.Time) string {
	s := r.State
	if s == nil {
		return fmt.Sprintf("DNS (service/%s): not published yet (records enabled in the issuer configuration?)", r.Service)
	}
	mark := map[string]output.Level{contract.DNSRecordsPublished: output.OK, contract.DNSRecordsPending: output.Warn,
		contract.DNSRecordsConflict: output.Warn, contract.DNSRecordsError: output.Fail}[s.State]
	line := fmt.Sprintf("DNS (service/%s): %s %s since %s ago", r.Service, st.Mark(mark), s.State, ago(now.Sub(s.Since)))
	if len(s.Records) > 0 {
		line += ": " + strings.Join(s.Records, "; ")
	}
	if s.Message != "" {
		line += " (" + s.Message + ")"
	}
	return line
}
