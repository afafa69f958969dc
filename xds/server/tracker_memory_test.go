package server

import (
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// A client reading its responses (LDS and CDS of 1,000 routes, wildcard) and never answering
// them costs the server little beyond the stream itself: go-control-plane marshals each
// response per stream and drops it once sent, and a client can open many such streams, so
// the tracker keeps names and hashes, not the resources. The whole stream (go-control-plane's
// state, the transport, the tracker) stays under one and a half times its responses' size;
// keeping the resources until answered made it twice.
func TestUnansweredStreamHeap(t *testing.T) {
	h := start(t)
	h.apply(t, benchModel(1000))
	const streams = 20
	before := heapInUse()
	var cs []*adsClient
	size := 0
	for i := range streams {
		c := dialADS(t, h, fmt.Sprintf("idle-%02d", i), "gRPC Go")
		c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
		c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
		size = proto.Size(c.recv(resourcev3.ListenerType)) + proto.Size(c.recv(resourcev3.ClusterType))
		cs = append(cs, c)
	}
	perStream := (heapInUse() - before) * (1 << 20) / streams
	t.Logf("responses of %d bytes per stream; heap held per unanswered stream %.0f bytes", size, perStream)
	if perStream > 1.5*float64(size) {
		t.Fatalf("an unanswered stream holds %.0f bytes of heap, responses of %d bytes", perStream, size)
	}
}
