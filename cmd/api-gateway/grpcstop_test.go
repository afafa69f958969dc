package main

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// stopGRPC cuts a stream that never ends by itself (a health Watch stands in for ADS and the
// access-log stream) but lets a unary RPC already in flight finish: a Check that takes
// 600 ms and started before the stop succeeds, and the stop takes about that long, not the
// 10 s cap.
func TestStopGRPCFinishesUnaryAndCutsStreams(t *testing.T) {
	const slow = 600 * time.Millisecond
	var u unaryInFlight
	started := make(chan struct{}, 1)
	slowCheck := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		started <- struct{}{}
		time.Sleep(slow)
		return h(ctx, req)
	}
	srv := grpc.NewServer(append(u.serverOptions(), grpc.ChainUnaryInterceptor(slowCheck))...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	checkErr := make(chan error, 1)
	go func() {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		checkErr <- err
	}()
	<-started

	begin := time.Now()
	stopGRPC(srv, &u, nil, defaultGRPCStop)
	took := time.Since(begin)
	if err := <-checkErr; err != nil {
		t.Fatalf("the unary RPC in flight failed: %v", err)
	}
	if took > slow+2*time.Second {
		t.Fatalf("stop took %v; want about %v (the unary RPC), not the cap", took, slow)
	}
	for {
		if _, err := watch.Recv(); err != nil {
			break // cut by Stop, as intended
		}
	}
}

// max is a hard cap: a unary handler that ignores its context (a backend call without a
// deadline) does not hold the process past it. GracefulStop waits for every handler, so
// waiting for it after Stop used to wait for the hung handler forever.
func TestStopGRPCCapHoldsWithAHandlerThatIgnoresItsContext(t *testing.T) {
	var u unaryInFlight
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 1)
	hung := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		started <- struct{}{}
		<-release // never looks at ctx
		return h(ctx, req)
	}
	srv := grpc.NewServer(append(u.serverOptions(), grpc.ChainUnaryInterceptor(hung))...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	go func() {
		_, _ = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	}()
	<-started
	timing := grpcStopTiming{settle: 150 * time.Millisecond, max: 300 * time.Millisecond}
	done := make(chan struct{})
	begin := time.Now()
	go func() { stopGRPC(srv, &u, nil, timing); close(done) }()
	select {
	case <-done:
		if took := time.Since(begin); took > timing.max+grpcStopAbandon+time.Second {
			t.Fatalf("stop took %v", took)
		}
	case <-time.After(timing.max + grpcStopAbandon + 3*time.Second):
		t.Fatal("stopGRPC waited for a handler that ignores its context past the cap")
	}
}
