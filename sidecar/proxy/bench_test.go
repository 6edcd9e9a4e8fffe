package proxy

import (
	"io"
	"net"
	"testing"
)

// BenchmarkInboundRoundTrip measures one 100-byte request and answer through
// an established inbound mTLS connection (the keep-alive hot path).
func BenchmarkInboundRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 100)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	r := newRig(b, ln.Addr().String(), nil)
	c := r.dial(b)
	defer c.Close()
	_ = c.SetDeadline(noDeadline)
	msg := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}
