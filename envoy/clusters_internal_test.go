package envoy

import (
	"math"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

func eps(hosts ...string) []ir.Endpoint {
	out := make([]ir.Endpoint, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, ir.Endpoint{Host: h, Port: 8080, Weight: 1})
	}
	return out
}

// A cluster is served to proxyless clients when its endpoints are IP addresses (EDS) or one
// DNS name (LOGICAL_DNS); several endpoints of which one is a name are left out, and so is a
// lone host that is no DNS name. The reason names the target or service, the rule and the fix.
func TestGRPCClusterOmission(t *testing.T) {
	served := []*ir.Cluster{
		{Name: "route/r/0", RouteID: "r", Discovery: ir.DiscoveryEDS, Endpoints: eps("10.0.0.1", "10.0.0.2", "::1")},
		{Name: "route/r/0", RouteID: "r", Discovery: ir.DiscoveryEDS},
		{Name: "route/r/0", RouteID: "r", Discovery: ir.DiscoveryDNS, Endpoints: eps("user-service")},
		{Name: "route/r/0", RouteID: "r", Discovery: ir.DiscoveryDNS, Endpoints: eps("_grpc.user_service.internal.")},
		{Name: "service/users", Service: "users", Discovery: ir.DiscoveryDNS, Endpoints: eps("users.internal")},
		// IPs under a DNS discovery: EDS for proxyless clients.
		{Name: "route/r/0", RouteID: "r", Discovery: ir.DiscoveryDNS, Endpoints: eps("10.0.0.1", "10.0.0.2")},
	}
	for _, c := range served {
		if got := grpcClusterOmission(c); got != "" {
			t.Errorf("%s %v: left out: %s", c.Name, c.Endpoints, got)
		}
	}

	mixed := &ir.Cluster{Name: "route/r/2", RouteID: "r", Target: 2, Service: "users", Discovery: ir.DiscoveryDNS,
		Endpoints: eps("10.0.3.1", "users-b.internal", "users-c.internal")}
	got := grpcClusterOmission(mixed)
	for _, want := range []string{`targets[2]: service "users" has 3 instances`, `"users-b.internal" is a host name`,
		"resolves one host name per cluster", "register the instances by IP address"} {
		if !strings.Contains(got, want) {
			t.Errorf("reason %q lacks %q", got, want)
		}
	}
	svc := &ir.Cluster{Name: "service/users", Service: "users", Discovery: ir.DiscoveryDNS, Endpoints: eps("a.internal", "b.internal")}
	if got := grpcClusterOmission(svc); !strings.HasPrefix(got, `service users: service "users" has 2 instances and "a.internal"`) {
		t.Errorf("service reason %q", got)
	}

	for _, host := range []string{"bad host", "a:b", "x..y", "-lead.example", "trail-.example", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefgh.", 29) + "com", "héllo.example", "evil\n.example", "%2e.example", "a/b", "."} {
		c := &ir.Cluster{Name: "route/r/1", RouteID: "r", Target: 1, Discovery: ir.DiscoveryDNS, Endpoints: eps(host)}
		got := grpcClusterOmission(c)
		if !strings.HasPrefix(got, "targets[1]: ") || !strings.Contains(got, "neither an IP address nor a DNS name") {
			t.Errorf("host %q: reason %q", host, got)
		}
	}
}

// The gRPC flavor's cluster key follows its discovery type: the same IR cluster (same name,
// same discovery) rebuilt with a host name where it had an IP address becomes LOGICAL_DNS, a
// new name changes the cluster, and an IP address again makes it EDS, through one memo.
func TestGRPCFlavorMemoFollowsDiscoveryType(t *testing.T) {
	no := false
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}, Routes: []*model.Route{{
		ID: "r", Hosts: []string{"r.test"}, RequireAuth: &no, Conditions: []model.Condition{{PathPrefix: "/"}},
		Targets: []model.Target{{Host: "first.internal", Port: 8080}},
	}}}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000"})
	if err != nil || len(cfg.RouteErrors) > 0 {
		t.Fatal(err, cfg.RouteErrors)
	}
	with := func(host string) *ir.Config {
		next := *cfg
		next.Clusters = nil
		for _, c := range cfg.Clusters {
			if c.RouteID == "r" {
				n := *c
				n.Endpoints = eps(host)
				c = &n
			}
			next.Clusters = append(next.Clusters, c)
		}
		return &next
	}
	memo := NewMemo()
	for _, step := range []struct {
		host string
		typ  clusterv3.Cluster_DiscoveryType
	}{{"10.0.0.1", clusterv3.Cluster_EDS}, {"first.internal", clusterv3.Cluster_LOGICAL_DNS},
		{"second.internal", clusterv3.Cluster_LOGICAL_DNS}, {"10.0.0.2", clusterv3.Cluster_EDS}} {
		res, err := Build(with(step.host), Options{Flavor: FlavorGRPC, Memo: memo})
		if err != nil {
			t.Fatal(err)
		}
		var got *clusterv3.Cluster
		for _, c := range res.Clusters {
			if c.GetName() == "route/r/0" {
				got = c
			}
		}
		if got.GetType() != step.typ {
			t.Fatalf("%s: type %v, want %v", step.host, got.GetType(), step.typ)
		}
		var addr string
		if step.typ == clusterv3.Cluster_EDS {
			for _, cla := range res.Endpoints {
				if cla.GetClusterName() == "route/r/0" {
					addr = cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
				}
			}
		} else {
			addr = got.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
			if _, ok := res.EndpointHashes["route/r/0"]; ok {
				t.Errorf("%s: a LOGICAL_DNS cluster has an endpoint hash", step.host)
			}
		}
		if addr != step.host {
			t.Errorf("%s: serves %q", step.host, addr)
		}
	}
}

func locality(weights ...uint32) *endpointv3.ClusterLoadAssignment {
	loc := &endpointv3.LocalityLbEndpoints{}
	for i, w := range weights {
		e := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress("10.0.0."+string(rune('1'+i)), 80)}}}
		if w != 1 {
			e.LoadBalancingWeight = u32(w)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, e)
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{loc}}
}

// Envoy (load_balancer_impl.cc) and grpc-go (unmarshal_eds.go) refuse a locality whose
// endpoint weights sum above 2^32-1; grpc-go also a zero weight and a repeated address.
func TestCheckLoadAssignment(t *testing.T) {
	if err := checkLoadAssignment(locality(math.MaxUint32-2, 1, 1)); err != nil {
		t.Errorf("a sum of exactly 2^32-1: %v", err)
	}
	if err := checkLoadAssignment(locality(math.MaxUint32, math.MaxUint32, 2)); err == nil || !strings.Contains(err.Error(), "sum to 8589934592") {
		t.Errorf("overflow: %v", err)
	}
	zero := locality(1, 2)
	zero.Endpoints[0].LbEndpoints[1].LoadBalancingWeight = wrapperspb.UInt32(0)
	if err := checkLoadAssignment(zero); err == nil || !strings.Contains(err.Error(), "weight 0") {
		t.Errorf("weight 0: %v", err)
	}
	dup := locality(1, 1)
	dup.Endpoints[0].LbEndpoints[1] = dup.Endpoints[0].LbEndpoints[0]
	if err := checkLoadAssignment(dup); err == nil || !strings.Contains(err.Error(), "10.0.0.1:80 appears twice") {
		t.Errorf("duplicate: %v", err)
	}
}

// A route cluster whose endpoints repeat an address is refused with the route (not the
// whole build); a service cluster over the limit fails the build as any invalid service
// cluster does, which translation prevents by scaling instance weights.
func TestBuildRefusesARouteWithARepeatedEndpoint(t *testing.T) {
	no := false
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}, Routes: []*model.Route{{
		ID: "r", Hosts: []string{"r.test"}, RequireAuth: &no, Conditions: []model.Condition{{PathPrefix: "/"}},
		Targets: []model.Target{{Host: "10.0.0.1", Port: 8080}},
	}}}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000"})
	if err != nil || len(cfg.RouteErrors) > 0 {
		t.Fatal(err, cfg.RouteErrors)
	}
	for _, c := range cfg.Clusters {
		if c.RouteID == "r" {
			c.Endpoints = append(c.Endpoints, c.Endpoints[0])
		}
	}
	for _, fl := range []Flavor{FlavorEnvoy, FlavorGRPC} {
		res, err := Build(cfg, Options{Flavor: fl})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.RouteErrors["r"]; !strings.Contains(got, "10.0.0.1:8080 appears twice") {
			t.Errorf("flavor %d: %q", fl, got)
		}
	}
}

// Envoy's configureLbPolicies (upstream_impl.cc) refuses a list without a registered policy
// and a list next to lb_subset_config or common_lb_config's locality settings.
func TestCheckLoadBalancingPolicy(t *testing.T) {
	b := &builder{}
	ok := &clusterv3.Cluster{Name: "c", LoadBalancingPolicy: b.leastRequestList()}
	if err := checkLoadBalancingPolicy(ok); err != nil {
		t.Errorf("our list: %v", err)
	}
	unknown, _ := anypb.New(&structpb.Struct{})
	bad := &clusterv3.Cluster{Name: "c", LoadBalancingPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "x", TypedConfig: unknown}}}}}
	if err := checkLoadBalancingPolicy(bad); err == nil {
		t.Error("a list of unknown policies passes")
	}
	subset := &clusterv3.Cluster{Name: "c", LoadBalancingPolicy: b.leastRequestList(), LbSubsetConfig: &clusterv3.Cluster_LbSubsetConfig{}}
	if err := checkLoadBalancingPolicy(subset); err == nil {
		t.Error("lb_subset_config passes")
	}
	loc := &clusterv3.Cluster{Name: "c", LoadBalancingPolicy: b.leastRequestList(), CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{
		LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}}
	if err := checkLoadBalancingPolicy(loc); err == nil {
		t.Error("locality_weighted_lb_config passes")
	}
	if err := checkClusterRuntime(ok, nil); err != nil {
		t.Errorf("runtime rules refuse our list: %v", err)
	}
}
