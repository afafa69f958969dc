package analytics

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// variedEntries builds entries over the shapes Envoy sends: with and without upstream,
// response, identity, start time, flags; intermediate entries; metadata of other filters
// and non-string values.
func variedEntries(r *rand.Rand, n int) []*alsdata.HTTPAccessLogEntry {
	methods := []corev3.RequestMethod{corev3.RequestMethod_GET, corev3.RequestMethod_POST, corev3.RequestMethod_METHOD_UNSPECIFIED, corev3.RequestMethod_PATCH}
	out := make([]*alsdata.HTTPAccessLogEntry, n)
	for i := range out {
		s := logSpec{
			at: time.Unix(1700000000+int64(r.IntN(100000)), int64(r.IntN(1e9))), route: []string{"", "users", "orders", "r\x1fx"}[r.IntN(4)],
			method: methods[r.IntN(len(methods))], path: "/p", status: []uint32{0, 200, 204, 301, 404, 429, 503}[r.IntN(7)],
			total: time.Duration(r.IntN(5e9)), upstream: time.Duration(r.IntN(1e9)), noUpstream: r.IntN(3) == 0,
			reqHdr: uint64(r.IntN(5000)), reqBody: uint64(r.IntN(1 << 20)), respHdr: uint64(r.IntN(5000)), respBody: uint64(r.IntN(1 << 20)),
		}
		if r.IntN(4) > 0 {
			s.user, s.apiKey, s.tenant = fmt.Sprintf("u%d", r.IntN(50)), fmt.Sprintf("k%d", r.IntN(5)), []string{"", "t1"}[r.IntN(2)]
		}
		switch r.IntN(6) {
		case 0:
			s.flags = &alsdata.ResponseFlags{NoHealthyUpstream: true}
		case 1:
			s.flags = &alsdata.ResponseFlags{UpstreamRequestTimeout: true, RateLimited: r.IntN(2) == 0}
		case 2:
			s.flags = &alsdata.ResponseFlags{UnauthorizedDetails: &alsdata.ResponseFlags_Unauthorized{Reason: alsdata.ResponseFlags_Unauthorized_EXTERNAL_SERVICE}}
		}
		e := envoyEntry(s)
		cp := e.CommonProperties
		switch r.IntN(8) {
		case 0:
			cp.StartTime = nil
		case 1:
			cp.TimeToLastDownstreamTxByte = nil
			cp.Duration = durationpb.New(time.Duration(r.IntN(1e9)))
		case 2:
			cp.StartTime = &timestamppb.Timestamp{Seconds: 1, Nanos: -5} // invalid: ignored
		case 3:
			cp.TimeToFirstUpstreamTxByte = durationpb.New(time.Hour) // after rx: not subtracted
		}
		switch r.IntN(6) {
		case 0:
			e = periodic(e)
		case 1:
			cp.AccessLogType = alsdata.AccessLogType_DownstreamEnd
		case 2:
			cp.AccessLogType = alsdata.AccessLogType_UpstreamEnd
		}
		if cp.Metadata == nil && r.IntN(2) == 0 {
			cp.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		}
		if cp.Metadata != nil {
			other, _ := structpb.NewStruct(map[string]any{"user_id": "not-this-one", "n": 3.0})
			cp.Metadata.FilterMetadata["envoy.filters.http.ratelimit"] = other
			if st := cp.Metadata.FilterMetadata[ExtAuthzNamespace]; st != nil && r.IntN(4) == 0 {
				st.Fields["tenant_id"] = structpb.NewNumberValue(7) // not a string: ignored
				st.Fields["scopes"] = structpb.NewStringValue("read write")
			}
		}
		if r.IntN(5) == 0 {
			e.Response.ResponseHeaders = map[string]string{"x": "y"}
			e.Request.RequestHeaders = map[string]string{"a": "b"}
			cp.FilterStateObjects = nil
			cp.CustomTags = map[string]string{"t": "v"}
		}
		out[i] = e
	}
	return out
}

// TestFastDecodeMatchesProto: the fast decoder yields exactly what proto.Unmarshal plus
// FromHTTPLog yields, for every entry shape.
func TestFastDecodeMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	codec := ServerCodec()
	for round := range 50 {
		msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: variedEntries(r, 40)}}}
		if round%3 == 0 {
			msg.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-7", Cluster: "edge"}, LogName: "api-gateway"}
		}
		if round == 7 {
			msg.LogEntries = &accesslogv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: &accesslogv3.StreamAccessLogsMessage_TCPAccessLogEntries{
				LogEntry: []*alsdata.TCPAccessLogEntry{{}, {}, {}}}}
		}
		raw, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		fast, slow := newALSMessage(), newALSMessage()
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, fast); err != nil {
			t.Fatal(err)
		}
		if err := encoding.GetCodecV2("proto").Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, slow); err != nil {
			t.Fatal(err)
		}
		if !fast.fast || slow.fast {
			t.Fatal("codec paths not taken")
		}
		slow.fromProto()
		if fast.hasIdentifier != slow.hasIdentifier || fast.node != slow.node || fast.logName != slow.logName ||
			fast.intermediate != slow.intermediate || fast.tcp != slow.tcp || len(fast.entries) != len(slow.entries) {
			t.Fatalf("round %d: fast %+v\nslow %+v", round, fast, slow)
		}
		for i := range fast.entries {
			if fast.entries[i] != slow.entries[i] {
				t.Errorf("round %d entry %d:\nfast %+v\nslow %+v", round, i, fast.entries[i], slow.entries[i])
			}
		}
	}
	// Other messages pass through the standard codec untouched.
	var resp accesslogv3.StreamAccessLogsResponse
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(nil)}, &resp); err != nil {
		t.Error(err)
	}
	if codec.Name() != "proto" {
		t.Errorf("codec name %q", codec.Name())
	}
}

// TestFastDecodeRejectsGarbage: truncated or corrupt input is an error, never a panic.
func TestFastDecodeRejectsGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: variedEntries(r, 5)}}}
	raw, _ := proto.Marshal(msg)
	errs := 0
	for cut := range len(raw) {
		if newALSMessage().decode(raw[:cut]) != nil {
			errs++
		}
	}
	for range 2000 {
		b := append([]byte(nil), raw...)
		for range 1 + r.IntN(4) {
			b[r.IntN(len(b))] = byte(r.IntN(256))
		}
		_ = newALSMessage().decode(b)
	}
	if errs == 0 {
		t.Error("no truncation was detected")
	}
}
