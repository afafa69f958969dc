package analytics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// logSpec describes one request the way a test wants it; envoyEntry builds the
// HTTPAccessLogEntry exactly as Envoy's http_grpc access logger fills it.
type logSpec struct {
	at                   time.Time
	route                string
	method               corev3.RequestMethod
	path                 string
	status               uint32 // 0 = no response
	total, upstream      time.Duration
	noUpstream           bool
	user, apiKey, tenant string
	reqHdr, reqBody      uint64
	respHdr, respBody    uint64
	flags                *alsdata.ResponseFlags
}

func envoyEntry(s logSpec) *alsdata.HTTPAccessLogEntry {
	cp := &alsdata.AccessLogCommon{
		StartTime:  timestamppb.New(s.at),
		RouteName:  s.route,
		SampleRate: 1,
		DownstreamRemoteAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}},
		TimeToLastRxByte:           durationpb.New(200 * time.Microsecond),
		TimeToLastDownstreamTxByte: durationpb.New(s.total),
		UpstreamCluster:            "svc_" + s.route,
		ResponseFlags:              s.flags,
	}
	if !s.noUpstream {
		cp.TimeToFirstUpstreamTxByte = durationpb.New(300 * time.Microsecond)
		cp.TimeToFirstUpstreamRxByte = durationpb.New(300*time.Microsecond + s.upstream)
		cp.TimeToLastUpstreamRxByte = durationpb.New(300*time.Microsecond + s.upstream + 100*time.Microsecond)
	}
	if s.user != "" || s.apiKey != "" || s.tenant != "" {
		f := map[string]any{"auth_method": "jwt"}
		if s.user != "" {
			f["user_id"] = s.user
		}
		if s.apiKey != "" {
			f["api_key_id"] = s.apiKey
			f["auth_method"] = "api_key"
		}
		if s.tenant != "" {
			f["tenant_id"] = s.tenant
		}
		st, err := structpb.NewStruct(f)
		if err != nil {
			panic(err)
		}
		cp.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{ExtAuthzNamespace: st}}
	}
	e := &alsdata.HTTPAccessLogEntry{
		CommonProperties: cp,
		ProtocolVersion:  alsdata.HTTPAccessLogEntry_HTTP11,
		Request: &alsdata.HTTPRequestProperties{
			RequestMethod: s.method, Scheme: "https", Authority: "api.example.com", Path: s.path,
			UserAgent: "curl/8", RequestId: "req-" + s.path, RequestHeadersBytes: s.reqHdr, RequestBodyBytes: s.reqBody,
		},
		Response: &alsdata.HTTPResponseProperties{ResponseHeadersBytes: s.respHdr, ResponseBodyBytes: s.respBody},
	}
	if s.status != 0 {
		e.Response.ResponseCode = wrapperspb.UInt32(s.status)
		e.Response.ResponseCodeDetails = "via_upstream"
	}
	return e
}

// alsServer runs a Service behind a real gRPC server on a free loopback port.
type alsServer struct {
	svc  *Service
	reg  *prometheus.Registry
	addr string
}

func startALS(t testing.TB, store Store, ret Retention, opts ...Option) *alsServer {
	t.Helper()
	return startALSServer(t, []grpc.ServerOption{ServerOption()}, store, ret, opts...)
}

// startALSServer is startALS with the given gRPC server options (none: the standard codec).
func startALSServer(t testing.TB, sopts []grpc.ServerOption, store Store, ret Retention, opts ...Option) *alsServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	svc, err := New(slog.New(slog.NewTextHandler(io.Discard, nil)), reg, store, ret, opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(sopts...)
	svc.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); _ = svc.Close() })
	return &alsServer{svc: svc, reg: reg, addr: addr}
}

// sendLogs streams the batches as one Envoy would: the identifier on the first message
// only. It returns after the server has consumed the whole stream.
func sendLogs(t testing.TB, addr string, batches ...[]*alsdata.HTTPAccessLogEntry) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range batches {
		msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: b}}}
		if i == 0 {
			msg.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{
				Node:    &corev3.Node{Id: "envoy-1", Cluster: "edge"},
				LogName: "api-gateway",
			}
		}
		if err := stream.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a settable clock, safe to read from the server's goroutines.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }
