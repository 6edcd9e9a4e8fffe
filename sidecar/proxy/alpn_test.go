package proxy

import (
	"crypto/tls"
	"testing"
)

// TestALPN: each inbound port offers the ALPN protocols its app protocol and
// the mode can serve.
func TestALPN(t *testing.T) {
	h2h1 := []string{"h2", "http/1.1"}
	cases := []struct {
		name      string
		mode      string
		protocol  string
		tcpALPN   []string // --alpn
		offer     []string // the client's list
		want      string   // negotiated; "" none
		wantError bool
	}{
		{name: "tcp mode default offers nothing", mode: ModeTCP, offer: h2h1, want: ""},
		{name: "tcp mode default with --alpn", mode: ModeTCP, tcpALPN: []string{"h2"}, offer: h2h1, want: "h2"},
		{name: "tcp port offers nothing", mode: ModeTCP, protocol: ProtoTCP, offer: h2h1, want: ""},
		{name: "tcp mode http1 port", mode: ModeTCP, protocol: ProtoHTTP1, offer: h2h1, want: "http/1.1"},
		{name: "tcp mode h2c port: grpc-go gets h2", mode: ModeTCP, protocol: ProtoH2C, offer: []string{"h2"}, want: "h2"},
		// crypto/tls lets http/1.1-only clients through without a protocol.
		{name: "tcp mode h2c port, http/1.1 client", mode: ModeTCP, protocol: ProtoH2C, offer: []string{"http/1.1"}, want: ""},
		{name: "tcp mode h2c port refuses other protocols", mode: ModeTCP, protocol: ProtoH2C, offer: []string{"spdy/3"}, wantError: true},
		{name: "tcp mode h2c port, client without ALPN", mode: ModeTCP, protocol: ProtoH2C, want: ""},
		{name: "http mode default", mode: ModeHTTP, offer: h2h1, want: "h2"},
		{name: "http mode default, http/1.1 client", mode: ModeHTTP, offer: []string{"http/1.1"}, want: "http/1.1"},
		{name: "http mode http1 port", mode: ModeHTTP, protocol: ProtoHTTP1, offer: h2h1, want: "h2"},
		{name: "http mode h2c port", mode: ModeHTTP, protocol: ProtoH2C, offer: h2h1, want: "h2"},
		{name: "http mode h2c port, http/1.1 client", mode: ModeHTTP, protocol: ProtoH2C, offer: []string{"http/1.1"}, want: "http/1.1"},
		{name: "http mode tcp port offers nothing", mode: ModeHTTP, protocol: ProtoTCP, offer: h2h1, want: ""},
	}
	app := echoServer(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, app, func(c *Config) {
				c.Mode = tc.mode
				c.ALPN = tc.tcpALPN
				c.Inbound[0].Protocol = tc.protocol
			})
			client := r.client.Clone()
			client.NextProtos = tc.offer
			c, err := tls.Dial("tcp", r.addr, client)
			if tc.wantError {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded, want no common protocol")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
				t.Fatalf("negotiated %q, want %q", got, tc.want)
			}
		})
	}
}
