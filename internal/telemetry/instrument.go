package telemetry

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// untracedMethods are the gRPC method prefixes not traced: health checks and the
// long-lived xDS and access-log streams (one span per stream would live for hours).
var untracedMethods = []string{
	"/grpc.health.v1.Health/",
	"/envoy.service.discovery.v3.",
	"/envoy.service.accesslog.v3.",
	"/grpc.reflection.",
}

func traced(info *stats.RPCTagInfo) bool {
	m := info.FullMethodName
	for _, p := range untracedMethods {
		if strings.HasPrefix(m, p) {
			return false
		}
	}
	// Per-type xDS services (ClusterDiscoveryService, ListenerDiscoveryService, ...).
	return !strings.Contains(m, "DiscoveryService/")
}

// GRPCServerOptions instruments a gRPC server with OpenTelemetry: a server span per unary
// RPC (ext_authz Check, ShouldRateLimit), continuing the caller's trace from the traceparent
// metadata Envoy sends. It uses the global provider and propagator set by SetupTracing.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(traced)))}
}

// GRPCDialOptions instruments a gRPC client the same way (spans and traceparent injection).
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}

// RequestIDHeader is the header carrying the request id (Envoy's).
const RequestIDHeader = "X-Request-Id"

// HTTPMiddleware traces each request (continuing a traceparent header) and puts its
// request id (X-Request-Id, generated when absent and echoed in the response) in the
// context for the logger.
func HTTPMiddleware(h http.Handler) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if id == "" || len(id) > 128 {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		h.ServeHTTP(w, r.WithContext(WithRequestID(r.Context(), id)))
	})
	return otelhttp.NewHandler(inner, "http.server",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "HTTP " + r.Method }))
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
