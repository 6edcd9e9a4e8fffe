package check

import (
	"fmt"
	"io"

	"github.com/podtls/podtls/cli/output"
)

// maxObjects bounds the objects listed under one line in human output (the
// JSON output lists all).
const maxObjects = 10

// Write renders the report for humans, fitted to output.Width columns.
func (r Report) Write(w io.Writer, st output.Style) error {
	const indent = "       " // width of a mark plus one space
	var lines []string
	for _, c := range r.Checks {
		msg := output.Wrap(c.Message, output.Width, indent, indent)
		lines = append(lines, st.Mark(c.Level)+" "+msg[0][len(indent):])
		lines = append(lines, msg[1:]...)
		if c.Level == output.OK || c.Level == output.Skip {
			continue
		}
		for i, o := range c.Objects {
			if i == maxObjects {
				lines = append(lines, fmt.Sprintf("%s  ... and %d more (--output json lists all)", indent, len(c.Objects)-maxObjects))
				break
			}
			lines = append(lines, output.Wrap(o, output.Width, indent+"- ", indent+"  ")...)
		}
		if c.Hint != "" {
			for _, l := range output.Wrap(c.Hint, output.Width, indent+"hint: ", indent+"      ") {
				lines = append(lines, st.Dim(l))
			}
		}
	}
	var fails, warns int
	for _, c := range r.Checks {
		switch c.Level {
		case output.Fail:
			fails++
		case output.Warn:
			warns++
		}
	}
	summary := fmt.Sprintf("%d checks: %d failed, %d warnings", len(r.Checks), fails, warns)
	lines = append(lines, "", st.Mark(r.Level)+" "+st.Bold(summary))
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}
