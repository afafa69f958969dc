// Package xdstest holds helpers for tests that drive proxyless grpc-go clients through the
// xDS server: gRPC backends that report their identity, and clients that resolve
// xds:///HOST against a given control plane.
package xdstest

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
	// calls counts the RPCs that reached the backend (failed ones included).
	calls atomic.Int64
}

// BackendOptions change how a backend answers.
type BackendOptions struct {
	// Delay holds every answer this long (or until the caller's deadline passes).
	Delay time.Duration
	// FailEvery > 0 fails the 1st, (1+FailEvery)th, (1+2*FailEvery)th... RPC with UNAVAILABLE
	// (2: every other call, starting with the first).
	FailEvery int
	// Host is the name the backend registers under (Backend.Host): "localhost" listens on
	// every loopback address localhost resolves to, on one port, so a client may dial any.
	// Default 127.0.0.1.
	Host string
}

// StartBackend starts a backend on a free loopback port; it stops at test cleanup.
func StartBackend(t testing.TB, name string) *Backend {
	t.Helper()
	return StartBackendWith(t, name, BackendOptions{})
}

// StartBackendWith starts a backend answering as o says; it stops at test cleanup.
func StartBackendWith(t testing.TB, name string, o BackendOptions) *Backend {
	t.Helper()
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ips := []string{host}
	if net.ParseIP(host) == nil {
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), host)
		if err != nil || len(addrs) == 0 {
			t.Fatalf("backend host %q: %v", host, err)
		}
		ips = addrs
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	listeners := []net.Listener{l}
	for _, ip := range ips[1:] {
		// Best effort: an address family the machine lacks is not an error, the client
		// falls back to the other addresses of the name.
		if extra, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err == nil {
			listeners = append(listeners, extra)
		}
	}
	b := &Backend{Name: name, Addr: l.Addr().String(), Host: host, Port: port}
	b.srv = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		n := b.calls.Add(1)
		if o.Delay > 0 {
			select {
			case <-time.After(o.Delay):
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		if o.FailEvery > 0 && (n-1)%int64(o.FailEvery) == 0 {
			// A failure is a Trailers-Only response, as most servers fail: header metadata set
			// before it would go out as a header frame of its own, and a client that received
			// headers has committed the call and never retries it (gRFC A6).
			return nil, status.Errorf(codes.Unavailable, "backend %s fails call %d on purpose", name, n)
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs(IdentityHeader, name))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(b.srv, health.NewServer())
	for _, l := range listeners {
		go func() { _ = b.srv.Serve(l) }()
	}
	t.Cleanup(b.srv.Stop)
	return b
}

// Calls returns how many RPCs reached the backend.
func (b *Backend) Calls() int64 { return b.calls.Load() }

// Stop stops the backend.
func (b *Backend) Stop() { b.srv.Stop() }

// Bootstrap returns an xDS bootstrap, for grpc-go and grpc-js, for a control plane at addr.
func Bootstrap(addr, nodeID, cluster string) []byte {
	b, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      addr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		// grpc-js refuses a node without a locality; grpc-go takes an empty one too.
		"node": map[string]any{"id": nodeID, "cluster": cluster, "locality": map[string]any{}},
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
