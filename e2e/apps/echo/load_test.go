package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestLoad runs `echo load` against an h2c server that names two backends in
// turn and fails every tenth request: the report counts each side of -split
// and every failure, and refuses an answer that did not come over HTTP/2.
func TestLoad(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		if r.ProtoMajor != 2 {
			http.Error(w, "want h2c", http.StatusHTTPVersionNotSupported)
			return
		}
		if i > 1 && i%10 == 0 {
			http.Error(w, "boom", http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, `{"hostname":"b%d"}`, i%2)
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()

	var out bytes.Buffer
	if err := run([]string{"load", "-n", "40", "-c", "2", "-qps", "1000", "-split", "20", srv.URL}, &out); err != nil {
		t.Fatal(err)
	}
	var rep loadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	sum := func(m map[string]int) (s int) {
		for _, v := range m {
			s += v
		}
		return s
	}
	if rep.Requests != 40 || rep.Failed != 4 || sum(rep.Before)+sum(rep.After)+rep.Failed != 40 || len(rep.Errors) != 4 {
		t.Fatalf("report %+v: want 40 requests, 4 failed, the rest counted", rep)
	}
	if len(rep.Before) != 2 || len(rep.After) != 2 {
		t.Fatalf("report %+v: want both backends on both sides of the split", rep)
	}

	h1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"hostname":"b"}`)
	}))
	defer h1.Close()
	if err := run([]string{"load", "-n", "1", "-timeout", "0s", h1.URL}, &out); err == nil {
		t.Fatal("load against an HTTP/1.1-only server succeeded")
	}
}
