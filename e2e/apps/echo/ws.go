package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// wsEcho dials a WebSocket URL, sends a text message and prints the first message read
// back that contains it (servers may interleave their own messages).
func wsEcho(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ws", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: echo ws [-timeout D] URL MESSAGE")
	}
	url, msg := fs.Arg(0), fs.Arg(1)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var conn *websocket.Conn
	for {
		c, _, err := websocket.Dial(ctx, url, nil)
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
