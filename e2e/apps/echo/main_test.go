package main

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("hello"))
	}))
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("secure"))
	}))
	defer tlsSrv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(file, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{"get", []string{"get", srv.URL}, "hello", ""},
		{"get non-200 gives up", []string{"get", "-timeout", "0s", srv.URL + "/missing"}, "", "404"},
		{"get https with cacert", []string{"get", "-cacert", caFile, tlsSrv.URL}, "secure", ""},
		{"get https with wrong roots", []string{"get", "-timeout", "0s", "-cacert", file, tlsSrv.URL}, "", "no PEM certificate"},
		{"get https untrusted", []string{"get", "-timeout", "0s", tlsSrv.URL}, "", "certificate"},
		{"cat", []string{"cat", file}, "v1", ""},
		{"cat missing", []string{"cat", file + ".none"}, "", "no such file"},
		{"no command", nil, "", "usage"},
		{"unknown command", []string{"dance"}, "", "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tt.args, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Fatalf("out = %q, want %q", out.String(), tt.want)
			}
		})
	}
}
