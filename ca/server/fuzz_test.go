package server

import (
	"bytes"
	"strings"
	"testing"
	"time"
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
		req, ttl, err := decodeSignRequest(bytes.NewReader(body))
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
