package output

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		name, text  string
		width       int
		first, rest string
		want        []string
	}{
		{"short", "hello world", 80, "", "", []string{"hello world"}},
		{"empty", "", 80, "> ", "  ", []string{"> "}},
		{"wraps at words", "aaa bbb ccc ddd", 9, "", "", []string{"aaa bbb", "ccc ddd"}},
		{"prefixes count", "aaa bbb ccc", 9, "- ", "  ", []string{"- aaa bbb", "  ccc"}},
		{"long word is cut", strings.Repeat("x", 25), 20, "", "", []string{strings.Repeat("x", 20), strings.Repeat("x", 5)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Wrap(tc.text, tc.width, tc.first, tc.rest)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWrapNeverExceedsWidth(t *testing.T) {
	text := "the controller's distributor writes it within seconds; if it persists, check https://example.com/a/very/long/url/that/does/not/fit/in/one/line/at/all/really"
	for w := 30; w <= 80; w++ { // below prefix+10 columns Wrap keeps 10 per line
		for _, l := range Wrap(text, w, "       hint: ", "             ") {
			if n := utf8.RuneCountInString(l); n > w {
				t.Fatalf("width %d: line of %d: %q", w, n, l)
			}
		}
	}
}

func TestTableFits(t *testing.T) {
	var b bytes.Buffer
	rows := [][]string{{"a-very-long-pod-name-that-goes-on-and-on-7d9c5b-xk2p", "yes", "namespace-enabled", "a-service-account-name", "23h left"}}
	if err := Table(&b, Width, []string{"POD", "SIDECAR", "REASON", "SERVICE-ACCOUNT", "MESH-CERT"}, rows); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if n := utf8.RuneCountInString(l); n > Width {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
	if !strings.Contains(b.String(), "~") || !strings.Contains(b.String(), "23h left") {
		t.Errorf("want the widest cell cut and the short ones kept:\n%s", b.String())
	}
}

func TestColor(t *testing.T) {
	if (Style{}).Mark(Fail) != "[FAIL]" {
		t.Error("no colour: want the bare mark")
	}
	if m := (Style{Color: true}).Mark(OK); !strings.HasPrefix(m, "\x1b[32m") {
		t.Errorf("colour mark %q", m)
	}
	var b bytes.Buffer
	if ColorEnabled(&b) {
		t.Error("a buffer is not a terminal")
	}
	t.Setenv("NO_COLOR", "1")
	if ColorEnabled(os.Stdout) {
		t.Error("NO_COLOR must disable colour")
	}
}
