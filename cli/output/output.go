// Package output renders the CLI's human output: status marks coloured only
// on a terminal (never with NO_COLOR or TERM=dumb), text wrapped to 80
// columns, tables that fit 80 columns, and indented JSON.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Width is the terminal width every human output fits in.
const Width = 80

// Level is the outcome of one check line.
type Level string

// The levels, in increasing severity; Skip means "not checked" and never fails.
const (
	OK   Level = "ok"
	Skip Level = "skip"
	Warn Level = "warn"
	Fail Level = "fail"
)

// Severity orders levels for "worst of".
func (l Level) Severity() int {
	switch l {
	case Warn:
		return 2
	case Fail:
		return 3
	case Skip:
		return 1
	}
	return 0
}

// ColorEnabled reports whether w is a terminal and colour is allowed: the
// NO_COLOR convention (https://no-color.org) and TERM=dumb turn it off.
func ColorEnabled(w io.Writer) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set || os.Getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Style renders marks and emphasis, with or without ANSI colour.
type Style struct{ Color bool }

const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiDim    = "\x1b[2m"
	ansiBold   = "\x1b[1m"
)

// Mark is the fixed-width (6 columns) mark of a level: "[ok]  ", "[FAIL]".
func (s Style) Mark(l Level) string {
	text, color := "[ok]  ", ansiGreen
	switch l {
	case Warn:
		text, color = "[warn]", ansiYellow
	case Fail:
		text, color = "[FAIL]", ansiRed
	case Skip:
		text, color = "[skip]", ansiDim
	}
	return s.paint(color, text)
}

// Bold emphasises a heading.
func (s Style) Bold(text string) string { return s.paint(ansiBold, text) }

// Dim de-emphasises a hint.
func (s Style) Dim(text string) string { return s.paint(ansiDim, text) }

func (s Style) paint(color, text string) string {
	if !s.Color {
		return text
	}
	return color + text + ansiReset
}

// Wrap breaks text into lines of at most width columns, the first prefixed
// with first and the others with an indent of the same width as rest. Words
// longer than a line are cut.
func Wrap(text string, width int, first, rest string) []string {
	var lines []string
	line, prefix := "", first
	flush := func() {
		lines = append(lines, prefix+line)
		line, prefix = "", rest
	}
	for _, word := range strings.Fields(text) {
		avail := width - utf8.RuneCountInString(prefix)
		if avail < 10 {
			avail = 10
		}
		for utf8.RuneCountInString(word) > avail {
			if line != "" {
				flush()
				continue
			}
			r := []rune(word)
			line = string(r[:avail])
			word = string(r[avail:])
			flush()
		}
		switch {
		case line == "":
			line = word
		case utf8.RuneCountInString(prefix+line)+1+utf8.RuneCountInString(word) <= width:
			line += " " + word
		default:
			flush()
			line = word
		}
	}
	if line != "" || len(lines) == 0 {
		flush()
	}
	return lines
}

// JSON writes v as indented JSON with a trailing newline.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
