package server

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/api-gateway/api-gateway/translate"
)

// A proxyless client follows the listeners of the hosts it dialed. One that dialed a host
// with no cluster never asks for clusters, and one that is slow on its own host does not
// hold routes of other hosts PENDING: a route's state at the gRPC group weighs only the
// clients that follow one of its hosts.
func TestRouteStateWeighsTheClientsOfItsHosts(t *testing.T) {
	h := start(t)
	h.apply(t, threeRoutes(1, 10))
	a := dialADS(t, h, "client-a", "gRPC Go")
	a.subscribe(resourcev3.ListenerType, "a.test")
	a.subscribe(resourcev3.RouteType, "grpc/a.test")
	a.subscribe(resourcev3.ClusterType, translate.ClusterName("a", 0))

	// client-x dialed a host no route serves: it follows a listener and asks for nothing else.
	x := dialADS(t, h, "client-x", "gRPC Go")
	x.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"nothing.test"}})
	wantStates(t, h, "a ACKED with a client on another host", map[string]string{"a": StateAcked})

	// client-b follows b.test and answers nothing yet: b is PENDING, a stays ACKED.
	b := dialADS(t, h, "client-b", "gRPC Go")
	b.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"b.test"}})
	wantStates(t, h, "b PENDING, a ACKED", map[string]string{"a": StateAcked, "b": StatePending})

	// A wildcard listener subscription (as Envoy's) follows every host.
	w := dialADS(t, h, "client-w", "gRPC Go")
	w.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
	wantStates(t, h, "a PENDING behind a wildcard client", map[string]string{"a": StatePending})
}
