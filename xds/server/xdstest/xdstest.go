// Package xdstest holds helpers for tests that drive proxyless grpc-go clients through the
// xDS server: gRPC backends that report their identity, and clients that resolve
// xds:///HOST against a given control plane.
package xdstest

import (
	"context"
	"encoding/json"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
)

// IdentityHeader is the response header a backend puts its name in.
const IdentityHeader = "x-backend"

// Backend is a running gRPC server (grpc.health.v1) that names itself in every response.
type Backend struct {
	Name string
	Addr string
	Host string
	Port int
	srv  *grpc.Server
}

// StartBackend starts a backend on a free loopback port; it stops at test cleanup.
func StartBackend(t testing.TB, name string) *Backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs(IdentityHeader, name))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	a := l.Addr().(*net.TCPAddr)
	return &Backend{Name: name, Addr: a.String(), Host: "127.0.0.1", Port: a.Port, srv: srv}
}

// Stop stops the backend.
func (b *Backend) Stop() { b.srv.Stop() }

// Bootstrap returns a grpc-go xDS bootstrap for a control plane at addr.
func Bootstrap(addr, nodeID, cluster string) []byte {
	b, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      addr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID, "cluster": cluster},
	})
	return b
}

// Dial opens a channel to xds:///target with its own xDS client (own ADS stream) talking
// to the control plane at addr. It closes at test cleanup.
func Dial(t testing.TB, addr, nodeID, target string) *grpc.ClientConn {
	t.Helper()
	rb, err := xds.NewXDSResolverWithConfigForTesting(Bootstrap(addr, nodeID, "edge"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Call makes one health Check RPC with the request metadata kv and returns the backend
// that answered.
func Call(ctx context.Context, cc *grpc.ClientConn, kv ...string) (string, error) {
	if len(kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	var md metadata.MD
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
	if err != nil {
		return "", err
	}
	if v := md.Get(IdentityHeader); len(v) > 0 {
		return v[0], nil
	}
	return "", nil
}
