package output

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Table writes rows under header, columns separated by two spaces, fitted
// into width columns: when too wide, the widest columns are shortened and
// their cells cut with a trailing "~". Cells never contain colour codes.
func Table(w io.Writer, width int, header []string, rows [][]string) error {
	n := len(header)
	widths := make([]int, n)
	for _, r := range append([][]string{header}, rows...) {
		for i := 0; i < n && i < len(r); i++ {
			widths[i] = max(widths[i], utf8.RuneCountInString(r[i]))
		}
	}
	fit(widths, width-2*(n-1))
	for _, r := range append([][]string{header}, rows...) {
		var b strings.Builder
		for i := 0; i < n; i++ {
			cell := ""
			if i < len(r) {
				cell = cut(r[i], widths[i])
			}
			if i == n-1 {
				b.WriteString(cell)
				break
			}
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)+2))
		}
		if _, err := fmt.Fprintln(w, strings.TrimRight(b.String(), " ")); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	return nil
}

// fit shrinks the widest column by one until the sum fits budget (no column
// below 4).
func fit(widths []int, budget int) {
	for {
		sum, widest := 0, 0
		for i, w := range widths {
			sum += w
			if w > widths[widest] {
				widest = i
			}
		}
		if sum <= budget || widths[widest] <= 4 {
			return
		}
		widths[widest]--
	}
}

func cut(s string, w int) string {
	if utf8.RuneCountInString(s) <= w {
		return s
	}
	r := []rune(s)
	return string(r[:w-1]) + "~"
}
