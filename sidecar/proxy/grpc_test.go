package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcApp is a gRPC app on plaintext loopback (h2c, prior knowledge).
type grpcApp struct {
	testgrpc.UnimplementedTestServiceServer
	deadlines chan time.Duration // time left on each unary call's deadline
	ended     chan error         // each FullDuplexCall's end, as the app saw it
}

// UnaryCall echoes the payload, sets a trailer, and answers with the status
// the request names.
func (a *grpcApp) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if dl, ok := ctx.Deadline(); ok {
		a.deadlines <- time.Until(dl)
	} else {
		a.deadlines <- 0
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("app-trailer", "t-"+string(req.GetPayload().GetBody())))
	if s := req.GetResponseStatus(); s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// FullDuplexCall answers each message as soon as it arrives.
func (a *grpcApp) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			a.ended <- err
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			a.ended <- err
			return err
		}
	}
}

func newGRPCApp(t testing.TB) (string, *grpcApp) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &grpcApp{deadlines: make(chan time.Duration, 64), ended: make(chan error, 64)}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, app)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), app
}

// grpcClient is a grpc-go client of the rig: TLS with client certificate,
// grpc-go's own ALPN enforcement on.
func (r *rig) grpcClient(t testing.TB) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(credentials.NewTLS(r.client.Clone())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

func payload(s string) *testgrpc.Payload { return &testgrpc.Payload{Body: []byte(s)} }

// TestGRPC runs a real grpc-go client and server through an h2c inbound port,
// in http mode (HTTP/2 proxied to the app) and in tcp mode (bytes spliced,
// ALPN h2 offered).
func TestGRPC(t *testing.T) {
	for _, mode := range []string{ModeHTTP, ModeTCP} {
		t.Run(mode, func(t *testing.T) {
			addr, app := newGRPCApp(t)
			r := newRig(t, addr, func(c *Config) { c.Mode = mode; c.Inbound[0].Protocol = ProtoH2C })
			client := r.grpcClient(t)

			t.Run("unary, trailer, deadline", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				var trailer metadata.MD
				res, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload("hello")}, grpc.Trailer(&trailer))
				if err != nil {
					t.Fatalf("UnaryCall: %v", err)
				}
				if got := string(res.GetPayload().GetBody()); got != "hello" {
					t.Fatalf("payload %q, want hello", got)
				}
				if got := trailer.Get("app-trailer"); len(got) != 1 || got[0] != "t-hello" {
					t.Fatalf("trailer app-trailer = %q, want t-hello", got)
				}
				// grpc-timeout reached the app: its deadline is the client's, less transit.
				if left := <-app.deadlines; left <= 20*time.Second || left > 30*time.Second {
					t.Fatalf("app saw %s left on the deadline, want about 30s", left)
				}
			})

			t.Run("status codes", func(t *testing.T) {
				for _, code := range []codes.Code{codes.NotFound, codes.PermissionDenied, codes.Unavailable} {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					var trailer metadata.MD
					_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{
						Payload:        payload("x"),
						ResponseStatus: &testgrpc.EchoStatus{Code: int32(code), Message: "app says " + code.String()},
					}, grpc.Trailer(&trailer))
					cancel()
					if s := status.Convert(err); s.Code() != code || s.Message() != "app says "+code.String() {
						t.Fatalf("status %v, want %v %q", s, code, "app says "+code.String())
					}
					if got := trailer.Get("app-trailer"); len(got) != 1 {
						t.Fatalf("trailer with an error status = %q, want t-x", got)
					}
				}
			})

			t.Run("bidirectional streaming", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				stream, err := client.FullDuplexCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				// Lock step: each answer must arrive before the next message
				// is sent, which only works if both directions are flushed
				// at once.
				for i := range 20 {
					msg := strings.Repeat("m", i+1)
					if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(msg)}); err != nil {
						t.Fatalf("send %d: %v", i, err)
					}
					res, err := stream.Recv()
					if err != nil || string(res.GetPayload().GetBody()) != msg {
						t.Fatalf("recv %d = %v, %v; want %q", i, res, err, msg)
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
					t.Fatalf("after CloseSend: %v, want EOF (status OK)", err)
				}
				if err := <-app.ended; err != nil {
					t.Fatalf("app saw the stream end with %v, want a clean end", err)
				}
			})

			t.Run("client cancellation reaches the app", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				stream, err := client.FullDuplexCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload("x")}); err != nil {
					t.Fatal(err)
				}
				if _, err := stream.Recv(); err != nil {
					t.Fatal(err)
				}
				cancel()
				select {
				case err := <-app.ended:
					if status.Code(err) != codes.Canceled {
						t.Fatalf("app saw %v, want Canceled", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the app's stream is still open after the client canceled")
				}
			})
		})
	}
}
