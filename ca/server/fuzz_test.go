package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/podtls/podtls/ca/signapi"
)

// FuzzDecodeSignRequest checks that arbitrary request bodies never panic and
// that an accepted body has a CSR and a positive (or default) TTL.
func FuzzDecodeSignRequest(f *testing.F) {
	f.Add([]byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n","ttl":"24h"}`))
	f.Add([]byte(`{"csr":"x"}`))
	f.Add([]byte(`{"csr":"x","ttl":"-1h"}`))
	f.Add([]byte(`{"csr":"x","ttl":"9999999999h"}`))
	f.Add([]byte(`{"csr":"x"} {"csr":"y"}`))
	f.Add([]byte(`{"csr":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, ttl, err := signapi.DecodeSignRequest(bytes.NewReader(body))
		if err != nil {
			return
		}
		if strings.TrimSpace(req.CSR) == "" {
			t.Fatal("accepted an empty csr")
		}
		if ttl < 0 || (req.TTL == "" && ttl != 0) {
			t.Fatalf("ttl %s from %q", ttl, req.TTL)
		}
	})
}

// FuzzTokenExpiry checks that exp parsing never panics and only returns
// times in a sane range.
func FuzzTokenExpiry(f *testing.F) {
	f.Add(jwtWithPayload(`{"exp":1800000000}`))
	f.Add(jwtWithPayload(`{"exp":1.8e9}`))
	f.Add(jwtWithPayload(`{"exp":"1800000000"}`))
	f.Add(jwtWithPayload(`{"exp":null}`))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		exp, ok := TokenExpiry(token)
		if !ok {
			return
		}
		if exp.Before(time.Unix(0, 0)) || exp.Year() > 9999 {
			t.Fatalf("exp %v out of range", exp)
		}
	})
}

// FuzzSignHandler throws arbitrary bodies at the whole sign handler (decode,
// policy, signing, error mapping): it must answer with one of the documented
// statuses and a JSON body, never panic.
func FuzzSignHandler(f *testing.F) {
	f.Add(signBody(f, newCSR(f, "web.demo.svc"), "1h"))
	f.Add(signBody(f, newCSR(f, "db.prod.svc"), ""))
	f.Add([]byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`{"csr":"x","ttl":"0s"}`))
	f.Add([]byte(`{`))
	srv, err := New(Options{
		Authority:     testAuthority(f, staticServices{names: []string{"web"}}),
		Authenticator: fakeAuth{"t": {Namespace: "demo", ServiceAccount: "web", PodName: "web-0"}},
		DNSNames:      []string{"podtls-controller.podtls-system.svc"},
		Rate:          rate.Inf,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	allowed := map[int]bool{200: true, 400: true, 403: true, 413: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, signapi.SignPath, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer t")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("status %d with a non-JSON body %q", rec.Code, rec.Body)
		}
	})
}
