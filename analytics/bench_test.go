package analytics

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// benchEntries are 1,000 distinct requests (10 routes, 1,000 users) as Envoy sends them.
func benchEntries() []*alsdata.HTTPAccessLogEntry {
	out := make([]*alsdata.HTTPAccessLogEntry, 1000)
	for i := range out {
		out[i] = envoyEntry(logSpec{at: time.Now(), route: fmt.Sprintf("route-%d", i%10), method: corev3.RequestMethod_GET,
			path: "/p", status: []uint32{200, 200, 200, 404, 503}[i%5], total: time.Duration(i%200) * time.Millisecond,
			upstream: time.Duration(i%150) * time.Millisecond, user: fmt.Sprintf("user-%d", i), apiKey: fmt.Sprintf("key-%d", i%50),
			tenant: fmt.Sprintf("t-%d", i%5), reqHdr: 300, reqBody: uint64(i), respHdr: 200, respBody: 1000})
	}
	return out
}

// BenchmarkALSIngestGRPC streams entries over real gRPC connections on loopback into a
// Service with a bolt store flushing every 10 s, and fails if any entry is missing. Envoy
// keeps one ALS stream per worker thread and batches entries (100 a message here); like
// Envoy, whose encoding cost is not ours, the client sends messages encoded before the
// timer starts, so the figure is the receiver's: gRPC framing, protobuf decoding, metrics
// and aggregation. Reports entries/s.
// codec=fast is the server with ServerOption (production wiring), codec=standard the
// baseline without it.
func BenchmarkALSIngestGRPC(b *testing.B) {
	for _, codec := range []string{"standard", "fast"} {
		var sopts []grpc.ServerOption
		if codec == "fast" {
			sopts = append(sopts, ServerOption())
		}
		for _, streams := range []int{1, 2} {
			b.Run(fmt.Sprintf("codec=%s/streams=%d", codec, streams), func(b *testing.B) { benchIngest(b, sopts, streams) })
		}
	}
}

func benchIngest(b *testing.B, sopts []grpc.ServerOption, streams int) {
	store, err := OpenBoltStore(filepath.Join(b.TempDir(), "analytics.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	srv := startALSServer(b, sopts, store, DefaultRetention())
	pool := benchEntries()
	const batch = 100
	frames := make([][][]byte, streams)
	for sent, i := 0, 0; sent < b.N; sent, i = sent+batch, i+1 {
		n := min(batch, b.N-sent)
		msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{}}}
		if i < streams {
			msg.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-1"}, LogName: "api-gateway"}
		}
		for j := range n {
			msg.GetHttpLogs().LogEntry = append(msg.GetHttpLogs().LogEntry, pool[(sent+j)%len(pool)])
		}
		raw, err := proto.Marshal(msg)
		if err != nil {
			b.Fatal(err)
		}
		frames[i%streams] = append(frames[i%streams], raw)
	}
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := accesslogv3.NewAccessLogServiceClient(conn)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for _, fs := range frames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sendRaw(b.Context(), client, fs)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(srv.svc.m.alsEntries.WithLabelValues("http")); int(got) != b.N {
		b.Fatalf("received %v of %d entries", got, b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "entries/s")
}

// rawFrame is a message already encoded as protobuf.
type rawFrame []byte

// preEncoded is a client codec that sends rawFrames as they are.
type preEncoded struct{ encoding.CodecV2 }

func (c preEncoded) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*rawFrame); ok {
		return mem.BufferSlice{mem.SliceBuffer(*f)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func sendRaw(ctx context.Context, c accesslogv3.AccessLogServiceClient, frames [][]byte) error {
	stream, err := c.StreamAccessLogs(ctx, grpc.ForceCodecV2(preEncoded{encoding.GetCodecV2("proto")}))
	if err != nil {
		return err
	}
	for _, f := range frames {
		fr := rawFrame(f)
		if err := stream.SendMsg(&fr); err != nil {
			return err
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// BenchmarkRecordInProcess is the baseline: the same entries converted and recorded without
// gRPC.
func BenchmarkRecordInProcess(b *testing.B) {
	store, err := OpenBoltStore(filepath.Join(b.TempDir(), "analytics.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	svc, err := New(nil, nil, store, DefaultRetention())
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	pool := benchEntries()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		e := FromHTTPLog(pool[i%len(pool)], time.Time{})
		svc.Record(&e)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
}

// BenchmarkAggregationMemory10kKeys measures the heap held by one minute of 10,000 distinct
// (route, api key, user, tenant) keys.
func BenchmarkAggregationMemory10kKeys(b *testing.B) {
	const keys = 10000
	entries := make([]Entry, keys)
	for i := range entries {
		entries[i] = Entry{Time: time.Unix(1700000000, 0), Route: fmt.Sprintf("route-%d", i%20), Method: "GET", Status: 200,
			User: fmt.Sprintf("user-%d", i), APIKey: fmt.Sprintf("key-%d", i%100), Tenant: fmt.Sprintf("tenant-%d", i%10),
			Duration: time.Millisecond}
	}
	var perKey float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		a := newAggregator(keys)
		for i := range entries {
			a.add(&entries[i])
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if a.size() != keys {
			b.Fatalf("rows = %d", a.size())
		}
		perKey = float64(after.HeapAlloc-before.HeapAlloc) / keys
		runtime.KeepAlive(a)
	}
	b.ReportMetric(perKey, "B/key")
	b.ReportMetric(perKey*keys/(1<<20), "MiB/10k-keys")
}

// BenchmarkDecode compares decoding one message of 100 entries: the standard proto codec
// plus FromHTTPLog (baseline) against the fast decoder. Reports entries/s.
func BenchmarkDecode(b *testing.B) {
	msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: benchEntries()[:100]}}}
	raw, err := proto.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(raw)}
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"standard", encoding.GetCodecV2("proto")}, {"fast", ServerCodec()}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				m := newALSMessage()
				if err := c.codec.Unmarshal(data, m); err != nil {
					b.Fatal(err)
				}
				if !m.fast {
					m.fromProto()
				}
				if len(m.entries) != 100 {
					b.Fatal(len(m.entries))
				}
			}
			b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "entries/s")
		})
	}
}
