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

// Clients sharing a node id (one bootstrap file for many processes, or a client whose new
// stream opens before its old one closes) are several streams of one node: a rejection is
// the rejecting stream's, and ends with it; the other streams' ACKs do not answer for it.
func TestRejectionEndsWithItsStream(t *testing.T) {
	h := start(t)
	h.apply(t, threeRoutes(1, 10))
	clusters := []string{translate.ClusterName("a", 0), translate.ClusterName("b", 0), translate.ClusterName("c", 0)}
	var cs []*adsClient
	var firsts []*discoveryv3.DiscoveryResponse
	for range 2 {
		c := dialADS(t, h, "shared", "gRPC Go")
		c.subscribe(resourcev3.ListenerType, "a.test", "b.test", "c.test")
		c.subscribe(resourcev3.RouteType, "grpc/a.test", "grpc/b.test", "grpc/c.test")
		firsts = append(firsts, c.subscribe(resourcev3.ClusterType, clusters...))
		cs = append(cs, c)
	}
	wantStates(t, h, "every route ACKED", map[string]string{"a": StateAcked, "b": StateAcked, "c": StateAcked})

	h.apply(t, threeRoutes(2, 20))
	bad, good := cs[0].recv(resourcev3.ClusterType), cs[1].recv(resourcev3.ClusterType)
	cs[0].nack(bad, firsts[0].GetVersionInfo(), fmt.Sprintf("resource %q: unsupported", clusters[1]))
	cs[1].ack(good)
	waitFor(t, "both answers", func() bool {
		n := nodesCounts(t, h, "shared")
		return n.Acks["cds"] == 3 && n.Nacks["cds"] == 1
	})
	if s := grpcState(h, "b"); s != StateNacked {
		t.Fatalf("b is %s while a stream rejects its cluster", s)
	}
	// The rejecting stream ends: nothing rejects b's cluster any more.
	if err := cs[0].stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one stream left", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "shared" {
				return n.Streams == 1
			}
		}
		return false
	})
	if n := nodesCounts(t, h, "shared"); len(n.Rejected) != 0 {
		t.Fatalf("rejected %v after the rejecting stream closed", n.Rejected)
	}
	wantStates(t, h, "every route ACKED", map[string]string{"a": StateAcked, "b": StateAcked, "c": StateAcked})
}
