package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPCRecovery turns a panic in a gRPC handler into an Internal error for that call, logged
// with its stack and counted in api_gateway_grpc_panics_total{method}, instead of a crash of
// the whole binary: one bad ext_authz or rate-limit request must not take xDS down for every
// Envoy. Recovery is the outermost interceptor, so it also covers the others.
func GRPCRecovery(log *slog.Logger, reg prometheus.Registerer) ([]grpc.ServerOption, error) {
	panics := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "api_gateway_grpc_panics_total",
		Help: "gRPC calls that panicked (answered Internal; the process keeps serving), by method.",
	}, []string{"method"})
	if reg != nil {
		if err := reg.Register(panics); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			panics = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	opt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		panics.WithLabelValues(method).Inc()
		log.ErrorContext(ctx, "gRPC handler panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(opt)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(opt))}, nil
}
