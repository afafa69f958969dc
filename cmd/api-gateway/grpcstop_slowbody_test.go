package main

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// slowConn delays every write once slow is set: a client on a long or congested path, whose
// request body arrives over several round trips after its headers.
type slowConn struct {
	net.Conn
	slow *atomic.Bool
}

func (c slowConn) Write(b []byte) (int, error) {
	if c.slow.Load() {
		time.Sleep(60 * time.Millisecond)
	}
	return c.Conn.Write(b)
}

// A unary RPC counts as in flight from its headers, not from when its whole request has
// arrived: a Check whose body takes a second to arrive (ext_authz with the request body, over
// a slow path) started before the stop and must not be cut by it. A unary interceptor runs
// only after the request is read, so the stop saw nothing in flight and cut it.
func TestStopGRPCWaitsForAUnaryRequestStillArriving(t *testing.T) {
	var u unaryInFlight
	srv := grpc.NewServer(u.serverOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	var slow atomic.Bool
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithWriteBufferSize(16<<10),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return slowConn{Conn: c, slow: &slow}, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil { // connect first
		t.Fatal(err)
	}
	slow.Store(true)
	checkErr := make(chan error, 1)
	go func() {
		// About 300 KB: ~20 writes of 16 KB, 60 ms each, so about a second to arrive.
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 300<<10)})
		checkErr <- err
	}()
	time.Sleep(150 * time.Millisecond) // the headers are in; the body is still arriving
	stopGRPC(srv, &u, nil, defaultGRPCStop)
	if err := <-checkErr; err != nil && !strings.Contains(err.Error(), "NotFound") && !strings.Contains(err.Error(), "unknown service") {
		t.Fatalf("the unary RPC whose request was still arriving was cut: %v", err)
	}
}
