package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// wsEcho dials a WebSocket URL, sends a text message and prints the first message read
// back that contains it (servers may interleave their own messages).
func wsEcho(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ws", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	cacert := fs.String("cacert", "", "PEM roots to verify a wss URL with (default: system roots)")
	connect := fs.String("connect", "", "HOST:PORT to dial instead of the URL's (the URL still gives SNI and Host)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: echo ws [-timeout D] [-cacert FILE] [-connect HOST:PORT] URL MESSAGE")
	}
	url, msg := fs.Arg(0), fs.Arg(1)
	tr := &http.Transport{}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			return fmt.Errorf("read -cacert: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-cacert %s holds no PEM certificate", *cacert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	if *connect != "" {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, *connect)
		}
	}
	opts := &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var conn *websocket.Conn
	for {
		c, _, err := websocket.Dial(ctx, url, opts)
		if err == nil {
			conn = c
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("dial %s: %w", url, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if strings.Contains(string(data), msg) {
			_, err := fmt.Fprintf(stdout, "%s\n", data)
			_ = conn.Close(websocket.StatusNormalClosure, "done")
			return err
		}
	}
}
