package telemetry

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// collector is a real OTLP/gRPC trace collector service that keeps what it receives.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
	names []string // service.name of each span's resource
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s)
				c.names = append(c.names, svc)
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) find(name string) (*tracepb.Span, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.spans {
		if s.GetName() == name {
			return s, c.names[i]
		}
	}
	return nil, ""
}

func serve(t *testing.T, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	register(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return addr
}

// checker is a Check-like test service that logs with the request's context.
type checker struct {
	authv3.UnimplementedAuthorizationServer
	log *slog.Logger
}

func (c checker) Check(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	c.log.InfoContext(WithRequestID(ctx, "req-42"), "checked")
	return &authv3.CheckResponse{}, nil
}

func restoreGlobals(t *testing.T) {
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() { otel.SetTracerProvider(tp); otel.SetTextMapPropagator(prop) })
}

const (
	envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpanID  = "00f067aa0ba902b7"
)

func TestTracePropagatesFromEnvoyToOTLP(t *testing.T) {
	restoreGlobals(t)
	col := &collector{}
	colAddr := serve(t, func(s *grpc.Server) { collectortrace.RegisterTraceServiceServer(s, col) })
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+colAddr)
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	ctx := context.Background()
	shutdown, err := SetupTracing(ctx, "api-gateway-test", "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := NewLogger("info", writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(p) }))
	hs := health.NewServer()
	addr := serve(t, func(s *grpc.Server) {
		authv3.RegisterAuthorizationServer(s, checker{log: logger})
		healthpb.RegisterHealthServer(s, hs)
	}, GRPCServerOptions()...)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Envoy's gRPC client sends the W3C header as metadata.
	md := metadata.Pairs("traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01")
	cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), 10*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(conn).Check(cctx, &authv3.CheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	// An HTTP request through the middleware continues its traceparent header too.
	h := HTTPMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.InfoContext(r.Context(), "handled")
	}))
	req := httptest.NewRequest(http.MethodGet, "/api/v1/management/routes", nil)
	req.Header.Set("traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rid := rec.Header().Get(RequestIDHeader); len(rid) != 32 {
		t.Errorf("generated request id = %q", rid)
	}

	if err := shutdown(ctx); err != nil { // flushes the batch to the collector
		t.Fatal(err)
	}
	span, svc := col.find("envoy.service.auth.v3.Authorization/Check")
	if span == nil {
		t.Fatalf("no Check span exported; got %d spans", len(col.spans))
	}
	if got := hex.EncodeToString(span.GetTraceId()); got != envoyTraceID {
		t.Errorf("trace id = %s, want the caller's %s", got, envoyTraceID)
	}
	if got := hex.EncodeToString(span.GetParentSpanId()); got != envoySpanID {
		t.Errorf("parent span = %s, want %s", got, envoySpanID)
	}
	if span.GetKind() != tracepb.Span_SPAN_KIND_SERVER || svc != "api-gateway-test" {
		t.Errorf("kind %v service %q", span.GetKind(), svc)
	}
	if s, _ := col.find("grpc.health.v1.Health/Check"); s != nil {
		t.Error("health checks are traced")
	}
	httpSpan, _ := col.find("HTTP GET")
	if httpSpan == nil || hex.EncodeToString(httpSpan.GetTraceId()) != envoyTraceID {
		t.Errorf("HTTP span = %v", httpSpan)
	}

	// The log lines carry the ids.
	logMu.Lock()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	logMu.Unlock()
	if len(lines) != 2 {
		t.Fatalf("log lines: %q", lines)
	}
	var rec1, rec2 map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &rec1)
	_ = json.Unmarshal([]byte(lines[1]), &rec2)
	if rec1["trace_id"] != envoyTraceID || rec1["request_id"] != "req-42" || rec1["span_id"] != hex.EncodeToString(span.GetSpanId()) {
		t.Errorf("gRPC log line = %s", lines[0])
	}
	if rec2["trace_id"] != envoyTraceID || rec2["request_id"] != rec.Header().Get(RequestIDHeader) {
		t.Errorf("HTTP log line = %s", lines[1])
	}
}

func TestNoOTLPEndpointIsNoop(t *testing.T) {
	restoreGlobals(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	shutdown, err := SetupTracing(context.Background(), "x", "y")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if _, ok := otel.GetTracerProvider().(noop.TracerProvider); !ok {
		t.Errorf("provider = %T, want noop", otel.GetTracerProvider())
	}
	// Propagation still works: a traceparent is continued (not recorded).
	h := HTTPMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sc := trace.SpanContextFromContext(r.Context()); sc.TraceID().String() != envoyTraceID {
			t.Errorf("trace id in handler = %s", sc.TraceID())
		}
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01")
	req.Header.Set(RequestIDHeader, "given-id")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Header().Get(RequestIDHeader) != "given-id" {
		t.Errorf("request id not echoed: %q", rec.Header().Get(RequestIDHeader))
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l := NewLogger("WARN", &buf)
	l.Info("hidden")
	l.With("component", "x").WarnContext(WithRequestID(context.Background(), "r1"), "shown", "k", 1)
	l.Error("no context ids")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines = %q", lines)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["msg"] != "shown" || m["request_id"] != "r1" || m["component"] != "x" || m["level"] != "WARN" {
		t.Errorf("line = %s", lines[0])
	}
	if strings.Contains(lines[1], "request_id") || strings.Contains(lines[1], "trace_id") {
		t.Errorf("ids without context: %s", lines[1])
	}
	if RequestIDFrom(context.Background()) != "" || RequestIDFrom(WithRequestID(context.Background(), "")) != "" {
		t.Error("empty request id")
	}
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "": slog.LevelInfo, "Warning": slog.LevelWarn, "error": slog.LevelError} {
		if got, ok := ParseLevel(in); !ok || got != want {
			t.Errorf("ParseLevel(%q) = %v %v", in, got, ok)
		}
	}
	if _, ok := ParseLevel("loud"); ok {
		t.Error("ParseLevel accepted loud")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestMetricsHandler(t *testing.T) {
	reg := NewRegistry()
	rec := httptest.NewRecorder()
	MetricsHandler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{"\ngo_goroutines ", "\nprocess_resident_memory_bytes ", "\npromhttp_metric_handler_requests_total{code=\"200\"} 0\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestTracedMethods(t *testing.T) {
	for m, want := range map[string]bool{
		"/envoy.service.auth.v3.Authorization/Check":                                       true,
		"/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit":                     true,
		"/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources": false,
		"/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources":  false,
		"/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters":                 false,
		"/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs":                    false,
		"/grpc.health.v1.Health/Watch":                                                     false,
	} {
		if got := traced(&stats.RPCTagInfo{FullMethodName: m}); got != want {
			t.Errorf("traced(%s) = %v, want %v", m, got, want)
		}
	}
}

// panicker's Check panics on a request without attributes.
type panicker struct {
	authv3.UnimplementedAuthorizationServer
}

func (panicker) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if r.GetAttributes() == nil {
		var m map[string]int
		m["boom"]++ // a nil map write
	}
	return &authv3.CheckResponse{}, nil
}

// TestGRPCRecovery: a handler that panics answers that call Internal, is logged and counted,
// and the server goes on serving.
func TestGRPCRecovery(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	reg := prometheus.NewRegistry()
	opts, err := GRPCRecovery(log, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, func(s *grpc.Server) { authv3.RegisterAuthorizationServer(s, panicker{}) }, opts...)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := authv3.NewAuthorizationClient(cc)
	if _, err := c.Check(context.Background(), &authv3.CheckRequest{}); status.Code(err) != codes.Internal {
		t.Fatalf("panicking call: %v, want Internal", err)
	}
	if _, err := c.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}); err != nil {
		t.Fatalf("the next call: %v", err)
	}
	n, err := promtest.GatherAndCount(reg, "api_gateway_grpc_panics_total")
	if err != nil || n != 1 {
		t.Fatalf("panics series %d %v", n, err)
	}
	if !strings.Contains(buf.String(), `"method":"/envoy.service.auth.v3.Authorization/Check"`) || !strings.Contains(buf.String(), "assignment to entry in nil map") {
		t.Errorf("log: %s", buf.String())
	}
}
