package probe

import (
	"encoding/binary"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...)
}

// FuzzParseHealthResponse: the app's answer is untrusted input; whatever it is, the
// parser returns an error or the status protobuf itself would decode.
func FuzzParseHealthResponse(f *testing.F) {
	for _, s := range []healthpb.HealthCheckResponse_ServingStatus{0, 1, 2, 3} {
		b, err := proto.Marshal(&healthpb.HealthCheckResponse{Status: s})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame(b))
	}
	f.Add(frame(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 7)))
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseHealthResponse(b)
		if err != nil {
			return
		}
		var want healthpb.HealthCheckResponse
		if perr := proto.Unmarshal(b[5:], &want); perr != nil {
			t.Fatalf("parsed %x as status %d, protobuf refuses it: %v", b, got, perr)
		}
		// An enum is an int32 on the wire's varint: compare as protobuf does.
		if int32(got) != int32(want.Status) {
			t.Fatalf("%x: status %d, protobuf says %d", b, got, want.Status)
		}
	})
}
