package server

import (
	"fmt"
	"math/rand/v2"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestConsistentAgreesWithGoControlPlane: the consistency check of a group (consistentRefs)
// accepts and refuses exactly what go-control-plane's Snapshot.Consistent does, over random
// listeners (RDS names), route configurations, clusters of every discovery kind (with and
// without an EDS service name) and endpoint assignments.
func TestConsistentAgreesWithGoControlPlane(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 1))
	pick := func(pool []string) []string {
		var out []string
		for _, n := range pool {
			if rng.IntN(3) > 0 {
				out = append(out, n)
			}
		}
		return out
	}
	routeNames := []string{"a", "b", "c"}
	epNames := []string{"c0", "c1", "c2", "c3", "s0", "s1"}
	outcomes := map[bool]int{}
	for i := range 3000 {
		var listeners, routes, clusters, eps []types.Resource
		var built []*clusterv3.Cluster
		for l := range rng.IntN(3) {
			var filters []*listenerv3.Filter
			for _, rn := range pick(routeNames) {
				m := &hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rn}}}
				a, err := anypb.New(m)
				if err != nil {
					t.Fatal(err)
				}
				filters = append(filters, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
			}
			listeners = append(listeners, &listenerv3.Listener{Name: fmt.Sprintf("l%d", l), FilterChains: []*listenerv3.FilterChain{{Filters: filters}}})
		}
		var wantRoutes []string
		for _, l := range listeners {
			for _, f := range l.(*listenerv3.Listener).FilterChains[0].Filters {
				m := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
					t.Fatal(err)
				}
				wantRoutes = append(wantRoutes, m.GetRds().GetRouteConfigName())
			}
		}
		exact := rng.IntN(2) == 0 // half the cases list exactly what is referenced, then maybe one change
		if !exact {
			wantRoutes = pick(routeNames)
		}
		for _, rn := range wantRoutes {
			routes = append(routes, &routev3.RouteConfiguration{Name: rn})
		}
		for c := range rng.IntN(5) {
			cl := &clusterv3.Cluster{Name: fmt.Sprintf("c%d", c)}
			switch rng.IntN(4) {
			case 0: // no discovery type: STATIC by default
			case 1:
				cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			default:
				cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
				switch rng.IntN(3) {
				case 0:
					cl.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{ServiceName: fmt.Sprintf("s%d", rng.IntN(2))}
				case 1:
					cl.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{}
				}
			}
			built = append(built, cl)
			clusters = append(clusters, cl)
		}
		wantEps := pick(epNames)
		if exact {
			wantEps = nil
			for _, cl := range built {
				if cl.GetType() == clusterv3.Cluster_EDS {
					n := cl.GetEdsClusterConfig().GetServiceName()
					if n == "" {
						n = cl.Name
					}
					wantEps = append(wantEps, n)
				}
			}
		}
		for _, n := range wantEps {
			eps = append(eps, &endpointv3.ClusterLoadAssignment{ClusterName: n})
		}
		if exact {
			switch rng.IntN(6) {
			case 0:
				eps = append(eps, &endpointv3.ClusterLoadAssignment{ClusterName: "extra"})
			case 1:
				if len(eps) > 0 {
					eps = eps[1:]
				}
			case 2:
				routes = append(routes, &routev3.RouteConfiguration{Name: "extra"})
			case 3:
				if len(routes) > 0 {
					routes = routes[1:]
				}
			}
		}
		snap, err := cachev3.NewSnapshot("v", map[resourcev3.Type][]types.Resource{
			resourcev3.ListenerType: listeners, resourcev3.RouteType: routes, resourcev3.ClusterType: clusters, resourcev3.EndpointType: eps})
		if err != nil {
			t.Fatal(err)
		}
		want := snap.Consistent()
		got := consistentRefs(listeners, routes, built, eps)
		if (want == nil) != (got == nil) {
			t.Fatalf("case %d: go-control-plane says %v, consistentRefs says %v", i, want, got)
		}
		outcomes[got == nil]++
	}
	if outcomes[true] < 100 || outcomes[false] < 100 {
		t.Fatalf("the cases do not exercise both outcomes: %v", outcomes)
	}
}
