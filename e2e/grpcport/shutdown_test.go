package grpcport

import (
	"context"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
