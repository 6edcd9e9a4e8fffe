package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandlerTracesTheChain(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	client := &http.Client{Timeout: 5 * time.Second}
	last := httptest.NewServer(handler("recommendation", "", client, log))
	defer last.Close()
	first := httptest.NewServer(handler("preference", last.URL, client, log))
	defer first.Close()

	req, _ := http.NewRequest(http.MethodGet, first.URL, nil)
	req.Header.Set(idHeader, "spiffe://cluster.local/ns/demo/sa/customer")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if resp.StatusCode != http.StatusOK || len(lines) != 2 {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	if !strings.HasPrefix(lines[0], "preference") || !strings.HasSuffix(lines[0], "spiffe://cluster.local/ns/demo/sa/customer") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "recommendation") || !strings.HasSuffix(lines[1], "(no verified identity)") {
		t.Errorf("second line %q", lines[1])
	}
}

func TestHandlerReportsAFailedNextHop(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	srv := httptest.NewServer(handler("customer", dead.URL, &http.Client{Timeout: time.Second}, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "failed") {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
}

func TestGetPrintsBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello\n") }))
	defer srv.Close()
	var out bytes.Buffer
	if err := get([]string{"-timeout", "1s", srv.URL}, &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello\n" {
		t.Fatalf("got %q", out.String())
	}
	if err := get([]string{"-timeout", "1ms", "http://127.0.0.1:1/"}, &out, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("get of a closed port succeeded")
	}
}

func TestCallerOf(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"mesh peer", map[string]string{idHeader: "spiffe://cluster.local/ns/demo/sa/visitor", "X-Forwarded-Proto": "https"}, "spiffe://cluster.local/ns/demo/sa/visitor"},
		{"public client", map[string]string{"X-Forwarded-Proto": "https"}, "public client (TLS for customer.demo.example.test, no client certificate)"},
		{"plaintext", nil, "(no verified identity)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "https://customer.demo.example.test/", nil)
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			if got := callerOf(r); got != tt.want {
				t.Errorf("callerOf = %q, want %q", got, tt.want)
			}
		})
	}
}
