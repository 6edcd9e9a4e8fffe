package status

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestExternalRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   External
	}{
		{"empty", External{}},
		{"issued", External{Hosts: []string{"*.example.com", "example.com"}, Directory: "https://acme.example/dir",
			CertIssuer: "CN=Pebble Intermediate", Serial: "0a1b", NotBefore: ts, NotAfter: ts.Add(90 * 24 * time.Hour),
			RenewAt: ts.Add(60 * 24 * time.Hour), RenewalSource: RenewalARI, LastAttempt: ts, LastSuccess: ts}},
		{"failing", External{Hosts: []string{"shop.example.com"}, LastAttempt: ts, LastError: "dns: REFUSED",
			Failures: 3, NextAttempt: ts.Add(8 * time.Minute), UnusedSince: ts, ForceRenew: "now"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in.Encode(nil))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tt.in)
			}
		})
	}
}

func TestEncodeClearsZeroFields(t *testing.T) {
	a := External{Hosts: []string{"a.example"}, LastError: "boom", Failures: 2}.Encode(map[string]string{"other": "kept"})
	a = External{Hosts: []string{"a.example"}, Serial: "01"}.Encode(a)
	for _, k := range []string{LastError, Failures} {
		if _, ok := a[k]; ok {
			t.Errorf("%s still set after a success", k)
		}
	}
	if a["other"] != "kept" {
		t.Error("foreign annotation removed")
	}
}

func TestDecodeReportsMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]string
		want string
	}{
		{"bad time", map[string]string{NotAfter: "tomorrow", Serial: "01"}, NotAfter},
		{"bad count", map[string]string{Failures: "-1"}, Failures},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
			if tt.in[Serial] != "" && got.Serial != tt.in[Serial] {
				t.Error("well-formed fields dropped")
			}
		})
	}
}

func TestAccountRoundTrip(t *testing.T) {
	in := Account{Directory: "https://acme.example/dir", URI: "https://acme.example/acct/1", Contact: "mailto:ops@example.com",
		RegisteredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	got, err := DecodeAccount(in.Encode(nil))
	if err != nil || got != in {
		t.Fatalf("got %+v, %v; want %+v", got, err, in)
	}
	if !got.Registered(in.Directory) || got.Registered("https://other/dir") {
		t.Error("Registered ignores the directory")
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	s := strings.Repeat("é", 600) // 1200 bytes
	got := External{LastError: s}.Encode(nil)[LastError]
	if len(got) > 1024 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("truncated to %d bytes, valid=%v", len(got), utf8.ValidString(got))
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("2026-01-01T00:00:00Z", "3", "a.example,b.example")
	f.Add("x", "y", "")
	f.Fuzz(func(t *testing.T, ts, n, hosts string) {
		e, err := Decode(map[string]string{NotAfter: ts, Failures: n, Hosts: hosts})
		if err == nil && e.Failures < 0 {
			t.Fatal("negative failure count accepted")
		}
	})
}
