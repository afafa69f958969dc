package grpcport

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

const clusterType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// openADS opens an ADS stream as Envoy does and waits for the first answer, so the stream is
// really being served when the test goes on.
func openADS(t *testing.T, ctx context.Context, cc *grpc.ClientConn) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{
		Node:    &corev3.Node{Id: "shutdown-test", Cluster: "edge"},
		TypeUrl: clusterType,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := ads.Recv(); err != nil {
		t.Fatalf("first ADS response: %v", err)
	}
	return ads
}

// SIGTERM with an ADS client connected used to take the whole 20 s shutdown timeout:
// grpc.Server.GracefulStop waits for every stream and an ADS stream never ends by itself.
// The binary now ends the stream first and exits well inside 5 s; the ADS client sees its
// stream end (and would reconnect to another replica).
func TestSIGTERMWithADSStreamExitsFast(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"LOG_LEVEL=info"}})
	cc, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ads := openADS(t, ctx, cc)
	// A health Watch is a second long-lived server stream, of a service that never ends it.
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	streamEnded := make(chan error, 1)
	go func() {
		for {
			if _, err := ads.Recv(); err != nil {
				streamEnded <- err
				return
			}
		}
	}()

	start := time.Now()
	g.Signal(syscall.SIGTERM)
	select {
	case <-g.Exited():
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit 15 s after SIGTERM with an ADS stream open:\n%s", g.Logs())
	}
	took := time.Since(start)
	t.Logf("exit %v after SIGTERM with an ADS stream and a health Watch open", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("shutdown took %v with an ADS stream open; want well under 5 s", took)
	}
	select {
	case err := <-streamEnded:
		t.Logf("ADS stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the ADS stream did not end with the process")
	}
}

// A restart (SIGTERM, then the same binary on the same ports) fails no unary RPC of a client
// that waits for the server to be ready, while an ADS stream is open: the RPCs in flight at
// SIGTERM finish (shutdown waits for them, not for the stream), and the ones sent while
// the process is gone wait and are answered by the new one. 8 callers loop on ext_authz
// Check the whole time.
func TestRestartFailsNoUnaryRPC(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"LOG_LEVEL=info"}})
	cc, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	adsCC, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer adsCC.Close()
	openADS(t, ctx, adsCC)

	authz := authv3.NewAuthorizationClient(cc)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/restart", Host: "restart.test", Headers: map[string]string{}},
	}}}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
				_, err := authz.Check(cctx, req)
				ccancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	before := ok.Load()
	start := time.Now()
	g.Stop() // SIGTERM and wait for the exit
	down := time.Since(start)
	g.Start()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d Checks answered (%d before SIGTERM), %d failed; exit took %v", ok.Load(), before, failed.Load(), down.Round(time.Millisecond))
	if failed.Load() != 0 {
		t.Fatalf("%d unary RPCs failed across the restart; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() <= before {
		t.Fatal("no Check answered after the restart")
	}
}
