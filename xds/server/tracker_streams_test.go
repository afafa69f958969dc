package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/translate"
)

// go-control-plane numbers SotW and delta streams with separate counters, so the first
// SotW stream and the first delta stream both have id 1: a gRPC client on SotW and an Envoy
// on delta are still two nodes, each with its own counts, and closing one leaves the other.
func TestSotwAndDeltaStreamsWithTheSameID(t *testing.T) {
	h := start(t)
	h.apply(t, threeRoutes(1, 10))
	c := dialADS(t, h, "grpc-1", "gRPC Go")
	c.subscribe(resourcev3.ClusterType, translate.ClusterName("a", 0))
	waitFor(t, "the SotW ACK", func() bool { return nodesCounts(t, h, "grpc-1").Acks["cds"] == 1 })

	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dctx, closeDelta := context.WithCancel(ctx)
	defer closeDelta()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(dctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", Cluster: "edge", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: statusProto("Error adding/updating cluster(s) " + translate.ClusterName("b", 0) + ": bad")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "envoy-1 listed with its NACK", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "envoy-1" {
				return n.Group == "edge" && n.Nacks["cds"] == 1
			}
		}
		return false
	})
	g := nodesCounts(t, h, "grpc-1")
	if fmt.Sprint(g.Acks) != "map[cds:1]" || len(g.Nacks) != 0 || len(g.Rejected) != 0 {
		t.Fatalf("grpc-1 took the delta stream's answers: acks %v nacks %v rejected %v", g.Acks, g.Nacks, g.Rejected)
	}
	if s := grpcState(h, "b"); s == StateNacked {
		t.Fatalf("b is %s for the gRPC group after an Envoy's NACK", s)
	}

	closeDelta()
	waitFor(t, "envoy-1 gone", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "envoy-1" {
				return false
			}
		}
		return true
	})
	// grpc-1's stream is still open.
	if g := nodesCounts(t, h, "grpc-1"); g.Acks["cds"] != 1 {
		t.Fatalf("grpc-1 after the delta stream closed: %+v", g)
	}
}
