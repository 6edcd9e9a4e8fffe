package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/podtls/podtls/internal/poll"
)

// wsEchoApp is a plain-HTTP app on loopback whose /ws echoes WebSocket
// messages; closed reports each server-side connection's end.
func wsEchoApp(t testing.TB) (addr string, closed <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			ch <- err
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				ch <- err
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				ch <- err
				return
			}
		}
	})}
	// HTTP/1.1 and h2c on one port, like many Go apps.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), ch
}

// wsDial opens a WebSocket through the rig's TLS listener.
func (r *rig) wsDial(ctx context.Context, t testing.TB) (*websocket.Conn, error) {
	t.Helper()
	client := r.client.Clone()
	client.NextProtos = []string{"http/1.1"} // WebSockets upgrade HTTP/1.1
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: client}}
	t.Cleanup(hc.CloseIdleConnections)
	c, _, err := websocket.Dial(ctx, "wss://"+r.addr+"/ws", &websocket.DialOptions{HTTPClient: hc})
	return c, err
}

// TestWebSocketHTTPMode: an Upgrade passes through http mode both ways, stays
// open across many messages, is counted while open and uncounted when closed.
func TestWebSocketHTTPMode(t *testing.T) {
	app, appClosed := wsEchoApp(t)
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.wsDial(ctx, t)
	if err != nil {
		t.Fatalf("websocket dial through the proxy: %v", err)
	}
	defer c.CloseNow()
	for i := range 50 {
		want := fmt.Sprintf("echo:msg %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(want[len("echo:"):])); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != want {
			t.Fatalf("read %d = %q, %v; want %q", i, got, err, want)
		}
	}
	if n := r.p.Open(); n != 1 {
		t.Fatalf("%d connections counted during the WebSocket, want 1", n)
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake through the proxy: %v", err)
	}
	select {
	case err := <-appClosed:
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("app saw %v, want a normal closure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the app never saw the close")
	}
	poll.Eventually(t, 10*time.Second, "the connection to be uncounted", func() (bool, string) {
		return r.p.Open() == 0, fmt.Sprintf("%d open", r.p.Open())
	})
}

// TestWebSocketLimitAndDrain: an upgraded connection counts against
// MaxConnections, keeps Shutdown waiting, and is closed when the drain ends.
func TestWebSocketLimitAndDrain(t *testing.T) {
	app, _ := wsEchoApp(t)
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP; c.MaxConnections = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.wsDial(ctx, t)
	if err != nil {
		t.Fatalf("websocket dial through the proxy: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	// At the limit: a second client is refused.
	if second, err := tls.Dial("tcp", r.addr, r.client); err == nil {
		_ = second.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = second.Read(make([]byte, 1))
		second.Close()
		if err == nil {
			t.Fatal("second connection served above MaxConnections while the WebSocket is open")
		}
	}
	// Drain: the open WebSocket keeps Shutdown waiting until its deadline,
	// then is closed.
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	if err := r.p.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded (the WebSocket was open)", err)
	}
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("WebSocket still open after the drain deadline")
	}
	poll.Eventually(t, 10*time.Second, "the connection to be uncounted", func() (bool, string) {
		return r.p.Open() == 0, fmt.Sprintf("%d open", r.p.Open())
	})
}

// TestH2CUpgradeNotForwarded: "Upgrade: h2c" is for cleartext connections;
// arriving over TLS it is dropped and the request is served as HTTP/1.1.
func TestH2CUpgradeNotForwarded(t *testing.T) {
	seen := make(chan http.Header, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = io.WriteString(w, "plain")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r := newRig(t, ln.Addr().String(), func(c *Config) { c.Mode = ModeHTTP })
	c := r.dial(t)
	defer c.Close()
	req := "GET / HTTP/1.1\r\nHost: server.demo.svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "plain" {
		t.Fatalf("got %s %q, want 200 \"plain\"", res.Status, body)
	}
	if h := <-seen; h.Get("Upgrade") != "" || h.Get("Connection") != "" {
		t.Fatalf("app saw Upgrade %q Connection %q, want neither", h.Get("Upgrade"), h.Get("Connection"))
	}
}

// TestUpgradeOnH2CPort: an Upgrade cannot cross the HTTP/2 hop to an h2c app;
// the client gets 502.
func TestUpgradeOnH2CPort(t *testing.T) {
	app, _ := wsEchoApp(t)
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP; c.Inbound[0].Protocol = ProtoH2C })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.wsDial(ctx, t)
	if err == nil {
		c.CloseNow()
		t.Fatal("WebSocket upgraded through an h2c port")
	}
	if !strings.Contains(err.Error(), "502") {
		t.Fatalf("dial error %v, want a 502 answer", err)
	}
}

// TestWebSocketIdleTimeout: an upgraded connection stays open while messages
// flow and is closed after the idle timeout without any, as in tcp mode.
func TestWebSocketIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	app, _ := wsEchoApp(t)
	r := newRig(t, app, func(c *Config) { c.Mode = ModeHTTP; c.IdleTimeout = idle })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.wsDial(ctx, t)
	if err != nil {
		t.Fatalf("websocket dial through the proxy: %v", err)
	}
	defer c.CloseNow()
	// Busy for longer than the idle timeout: each echo comes back before
	// the next message, so the gaps stay far below it.
	for busy := time.Now(); time.Since(busy) < idle+200*time.Millisecond; {
		if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
			t.Fatalf("closed while active: %v", err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatalf("closed while active: %v", err)
		}
	}
	start := time.Now()
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("read a message from a silent app")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle WebSocket closed after %s, want about %s", d, idle)
	}
	poll.Eventually(t, 10*time.Second, "the connection to be uncounted", func() (bool, string) {
		return r.p.Open() == 0, fmt.Sprintf("%d open", r.p.Open())
	})
}
