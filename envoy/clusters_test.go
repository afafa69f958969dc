package envoy_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/ir"
)

// buildFlavor builds one flavor and fails on an error or a refused route.
func buildFlavor(t *testing.T, cfg *ir.Config, fl envoy.Flavor) *envoy.Resources {
	t.Helper()
	res, err := envoy.Build(cfg, envoy.Options{Flavor: fl})
	if err != nil {
		t.Fatalf("flavor %d: %v", fl, err)
	}
	if len(res.RouteErrors) > 0 {
		t.Fatalf("flavor %d: routes refused: %v", fl, res.RouteErrors)
	}
	return res
}

func clusterNamed(t *testing.T, res *envoy.Resources, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range res.Clusters {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

func assignmentNamed(res *envoy.Resources, name string) *endpointv3.ClusterLoadAssignment {
	for _, cla := range res.Endpoints {
		if cla.GetClusterName() == name {
			return cla
		}
	}
	return nil
}

// weightedBackends lists "cluster=weight" of the first built route named id (a single
// cluster counts as weight 1).
func weightedBackends(t *testing.T, res *envoy.Resources, id string) []string {
	t.Helper()
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetName() != id {
					continue
				}
				ra := r.GetRoute()
				if c := ra.GetCluster(); c != "" {
					return []string{c + "=1"}
				}
				var out []string
				for _, wc := range ra.GetWeightedClusters().GetClusters() {
					out = append(out, fmt.Sprintf("%s=%d", wc.GetName(), wc.GetWeight().GetValue()))
				}
				return out
			}
		}
	}
	t.Fatalf("route %s is not served", id)
	return nil
}

// endpointWeights lists "host:port=weight" of a load assignment's only locality.
func endpointWeights(t *testing.T, cla *endpointv3.ClusterLoadAssignment) []string {
	t.Helper()
	if cla == nil || len(cla.GetEndpoints()) != 1 {
		t.Fatalf("want one locality: %v", cla)
	}
	var out []string
	for _, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
		sa := e.GetEndpoint().GetAddress().GetSocketAddress()
		out = append(out, fmt.Sprintf("%s:%d=%d", sa.GetAddress(), sa.GetPortValue(), e.GetLoadBalancingWeight().GetValue()))
	}
	return out
}

// A target given by host name reaches proxyless clients as a LOGICAL_DNS cluster of one
// locality with one endpoint, the only form grpc-js (cluster-resource-type.js) and grpc-go
// (unmarshal_cds.go, dnsHostNameFromCluster) take for a name: EDS carries IP addresses only.
// Envoy keeps STRICT_DNS; IP targets stay EDS in both.
func TestGRPCFlavorServesAHostNameAsLogicalDNS(t *testing.T) {
	cfg := translateYAML(t, `
  - id: named
    require_auth: false
    hosts: [named.test]
    conditions: [{path_pattern: "/named/*"}]
    targets: [{host: user-service, port: 50051, protocol: grpc}]
  - id: local
    require_auth: false
    hosts: [local.test]
    conditions: [{path_pattern: "/local/*"}]
    targets: [{host: localhost, port: 8080}]
`)
	g := buildFlavor(t, cfg, envoy.FlavorGRPC)
	for _, want := range []struct{ cluster, host string }{{"route/named/0", "user-service"}, {"route/local/0", "localhost"}} {
		c := clusterNamed(t, g, want.cluster)
		if c.GetType() != clusterv3.Cluster_LOGICAL_DNS || c.GetEdsClusterConfig() != nil {
			t.Errorf("%s: type %v, eds %v; want LOGICAL_DNS", want.cluster, c.GetType(), c.GetEdsClusterConfig())
		}
		la := c.GetLoadAssignment()
		if len(la.GetEndpoints()) != 1 || len(la.GetEndpoints()[0].GetLbEndpoints()) != 1 {
			t.Fatalf("%s: load_assignment must hold one locality with one endpoint: %v", want.cluster, la)
		}
		sa := la.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != want.host || sa.GetPortValue() == 0 || sa.GetResolverName() != "" {
			t.Errorf("%s: socket address %v", want.cluster, sa)
		}
		if assignmentNamed(g, want.cluster) != nil {
			t.Errorf("%s: a LOGICAL_DNS cluster has no EDS load assignment", want.cluster)
		}
	}
	if c := clusterNamed(t, g, "route/good/0"); c.GetType() != clusterv3.Cluster_EDS || assignmentNamed(g, "route/good/0") == nil {
		t.Errorf("an IP target stays EDS: %v", c.GetType())
	}
	e := buildFlavor(t, cfg, envoy.FlavorEnvoy)
	if c := clusterNamed(t, e, "route/named/0"); c.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("Envoy flavor: type %v, want STRICT_DNS", c.GetType())
	}
}

// least_connections is a load_balancing_policy list: least_request (choice_count 2), then
// round_robin. grpc-js NACKs lb_policy LEAST_REQUEST and skips least_request in the list;
// grpc-go and Envoy take least_request. The same cluster serves both flavors.
func TestLeastConnectionsIsAPolicyListEveryClientTakes(t *testing.T) {
	cfg := translateYAML(t, `
  - id: lc
    require_auth: false
    hosts: [lc.test]
    load_balance: least_connections
    conditions: [{path_pattern: "/lc/*"}]
    targets: [{host: 10.0.7.1, port: 8080}]
`)
	var built [2]*clusterv3.Cluster
	for i, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		c := clusterNamed(t, buildFlavor(t, cfg, fl), "route/lc/0")
		built[i] = c
		// grpc-js reads lb_policy only without load_balancing_policy, and then takes only
		// ROUND_ROBIN and RING_HASH.
		if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetLbConfig() != nil {
			t.Errorf("flavor %d: lb_policy %v, lb_config %v", fl, c.GetLbPolicy(), c.GetLbConfig())
		}
		ps := c.GetLoadBalancingPolicy().GetPolicies()
		if len(ps) != 2 {
			t.Fatalf("flavor %d: policies %v", fl, ps)
		}
		wantURLs := []string{
			"type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
			"type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
		}
		for j, p := range ps {
			if got := p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl(); got != wantURLs[j] {
				t.Errorf("flavor %d: policy %d is %s, want %s", fl, j, got, wantURLs[j])
			}
		}
		lr := &leastrequestv3.LeastRequest{}
		if err := ps[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(lr); err != nil || lr.GetChoiceCount().GetValue() != 2 {
			t.Errorf("flavor %d: least_request %v (%v), want choice_count 2", fl, lr, err)
		}
	}
	if !proto.Equal(built[0], built[1]) {
		t.Error("least_connections builds differently per flavor")
	}
}

// ip_hash stays lb_policy RING_HASH with XX_HASH and ring sizes within 8M: what grpc-js
// (cluster-resource-type.js), grpc-go and Envoy all take.
func TestIPHashIsARingEveryClientTakes(t *testing.T) {
	cfg := translateYAML(t, `
  - id: hash
    require_auth: false
    hosts: [hash.test]
    load_balance: ip_hash
    conditions: [{path_pattern: "/hash/*"}]
    targets: [{host: 10.0.7.1, port: 8080}]
`)
	for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		c := clusterNamed(t, buildFlavor(t, cfg, fl), "route/hash/0")
		rh := c.GetRingHashLbConfig()
		if c.GetLbPolicy() != clusterv3.Cluster_RING_HASH || c.GetLoadBalancingPolicy() != nil ||
			rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH ||
			rh.GetMinimumRingSize().GetValue() > 8388608 || rh.GetMaximumRingSize().GetValue() > 8388608 {
			t.Errorf("flavor %d: %v %v %v", fl, c.GetLbPolicy(), c.GetLoadBalancingPolicy(), rh)
		}
	}
}

// Under ip_hash and least_connections the targets that can share a cluster share one, named
// after the first of them, their weights as endpoint weights: the policy then chooses among
// them. Targets out of rotation, host names and other settings keep clusters of their own,
// and so does a repeated address under least_connections (under ip_hash it adds its weight
// to the address's endpoint); round_robin keeps one cluster per target.
func TestBalancedTargetsShareOneCluster(t *testing.T) {
	cfg := translateYAML(t, `
  - id: hash
    require_auth: false
    hosts: [hash.test]
    load_balance: ip_hash
    conditions: [{path_pattern: "/hash/*"}]
    targets:
      - {host: 10.0.5.1, port: 80, weight: 80}
      - {host: 10.0.5.2, port: 80, weight: 20}
      - {host: 10.0.5.3, port: 80, weight: 0}
      - {host: 10.0.5.4, port: 80, healthy: false}
      - {host: api.example.com, port: 80, weight: 10}
      - {host: 10.0.5.5, port: 80, weight: 10, tls: true}
      - {host: 10.0.5.1, port: 80, weight: 5}
      - {host: 10.0.5.6, port: 80, weight: 60, protocol: http1}
  - id: lc
    require_auth: false
    hosts: [lc.test]
    load_balance: least_connections
    conditions: [{path_pattern: "/lc/*"}]
    targets:
      - {host: 10.0.6.1, port: 80}
      - {host: 10.0.6.2, port: 80}
      - {host: 10.0.6.3, port: 80, weight: 2}
      - {host: 10.0.6.4, port: 80, weight: 2}
      - {host: 10.0.6.5, port: 80, weight: 3}
  - id: rr
    require_auth: false
    hosts: [rr.test]
    conditions: [{path_pattern: "/rr/*"}]
    targets: [{host: 10.0.8.1, port: 80}, {host: 10.0.8.2, port: 80}]
`)
	for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		res := buildFlavor(t, cfg, fl)
		check := func(what string, got []string, want ...string) {
			t.Helper()
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("flavor %d: %s: %v, want %v", fl, what, got, want)
			}
		}
		if fl == envoy.FlavorGRPC {
			// The TLS target leaves the route out of the gRPC flavor: nothing to share.
			if !strings.HasPrefix(res.Omitted["hash"], "targets[5].tls: ") {
				t.Errorf("gRPC flavor: hash is not left out for its TLS target: %q", res.Omitted["hash"])
			}
		} else {
			// 80+5/20/60 share route/hash/0 as 17:4:12 (divided by 5); the name and the TLS
			// target keep their own.
			check("hash backends", weightedBackends(t, res, "hash"), "route/hash/0=165", "route/hash/4=10", "route/hash/5=10")
			check("hash endpoints", endpointWeights(t, assignmentNamed(res, "route/hash/0")), "10.0.5.1:80=17", "10.0.5.2:80=4", "10.0.5.6:80=12")
			if c := clusterNamed(t, res, "route/hash/0"); c.GetLbPolicy() != clusterv3.Cluster_RING_HASH {
				t.Errorf("flavor %d: the shared cluster lost its policy: %v", fl, c.GetLbPolicy())
			}
		}
		// Equal weights share a cluster; the groups keep the route-level weights exact.
		check("lc backends", weightedBackends(t, res, "lc"), "route/lc/0=2", "route/lc/2=4", "route/lc/4=3")
		check("lc endpoints", endpointWeights(t, assignmentNamed(res, "route/lc/2")), "10.0.6.3:80=1", "10.0.6.4:80=1")
		check("rr backends", weightedBackends(t, res, "rr"), "route/rr/0=1", "route/rr/1=1")
		for _, gone := range []string{"route/hash/1", "route/hash/2", "route/hash/3", "route/hash/6", "route/hash/7", "route/lc/1", "route/lc/3"} {
			for _, c := range res.Clusters {
				if c.GetName() == gone {
					t.Errorf("flavor %d: cluster %s is built", fl, gone)
				}
			}
		}
	}
}

// A thousand targets under ip_hash are one cluster of a thousand endpoints, within every
// rule; a thousand targets of distinct weights under least_connections stay a thousand
// clusters (weights exact), and of equal weights become one.
func TestBalancedTargetsThousand(t *testing.T) {
	var hash, lcEqual, lcDistinct strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&hash, "      - {host: 10.2.%d.%d, port: 8080, weight: %d}\n", i/250, i%250+1, i+1)
		fmt.Fprintf(&lcEqual, "      - {host: 10.3.%d.%d, port: 8080, weight: 7}\n", i/250, i%250+1)
		fmt.Fprintf(&lcDistinct, "      - {host: 10.4.%d.%d, port: 8080, weight: %d}\n", i/250, i%250+1, i+1)
	}
	route := func(id, lb, targets string) string {
		return fmt.Sprintf("\n  - id: %s\n    require_auth: false\n    hosts: [%s.test]\n    load_balance: %s\n    conditions: [{path_pattern: \"/%s/*\"}]\n    targets:\n%s", id, id, lb, id, targets)
	}
	cfg := translateYAML(t, route("hash", "ip_hash", hash.String())+route("lceq", "least_connections", lcEqual.String())+
		route("lcd", "least_connections", lcDistinct.String()))
	for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		res := buildFlavor(t, cfg, fl)
		if got := weightedBackends(t, res, "hash"); len(got) != 1 || got[0] != "route/hash/0=1" {
			t.Errorf("flavor %d: hash backends %v", fl, got[:min(3, len(got))])
		}
		eps := endpointWeights(t, assignmentNamed(res, "route/hash/0"))
		if len(eps) != 1000 || eps[0] != "10.2.0.1:8080=1" {
			t.Errorf("flavor %d: %d endpoints, first %v", fl, len(eps), eps[:1])
		}
		if got := weightedBackends(t, res, "lceq"); len(got) != 1 || got[0] != "route/lceq/0=1" {
			t.Errorf("flavor %d: lceq backends %v", fl, got[:min(3, len(got))])
		}
		if got := weightedBackends(t, res, "lcd"); len(got) != 1000 {
			t.Errorf("flavor %d: lcd has %d backends", fl, len(got))
		}
	}
}

// envoyRingSize is the number of entries Envoy's ring hash builds for a cluster
// (source/extensions/load_balancing_policies/ring_hash/ring_hash_lb.cc, Ring::Ring:
// min(ceil(min_normalized_weight * minimum_ring_size) / min_normalized_weight,
// maximum_ring_size), each entry a 64-bit hash and a host pointer, 24 bytes, hashed, sorted
// and rebuilt on every change of the host set).
func envoyRingSize(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment) uint64 {
	var sum, least float64
	for _, loc := range cla.GetEndpoints() {
		for _, e := range loc.GetLbEndpoints() {
			w := float64(e.GetLoadBalancingWeight().GetValue())
			sum += w
			if least == 0 || w < least {
				least = w
			}
		}
	}
	rh := c.GetRingHashLbConfig()
	minNorm := least / sum
	scale := math.Min(math.Ceil(minNorm*float64(rh.GetMinimumRingSize().GetValue()))/minNorm, float64(rh.GetMaximumRingSize().GetValue()))
	return uint64(math.Ceil(scale))
}

// Target weights under ip_hash become endpoint weights, and Envoy sizes its ring by the
// lightest of them: ten targets, one of weight 1 and nine of 1,000,000, would make a ring of
// 8M entries (about 200 MB, rebuilt on every host change) for one route, in an Envoy every
// other route shares. The ring is capped at 65,536 entries (1.5 MB); proxyless clients cap
// theirs at 4,096 anyway (grpc-go envconfig.RingHashCap, grpc-js DEFAULT_RING_SIZE_CAP).
func TestIPHashRingStaysSmallUnderSkewedWeights(t *testing.T) {
	var targets strings.Builder
	for i := range 10 {
		w := 1_000_000
		if i == 0 {
			w = 1
		}
		fmt.Fprintf(&targets, "      - {host: 10.6.0.%d, port: 8080, weight: %d}\n", i+1, w)
	}
	cfg := translateYAML(t, "\n  - id: skew\n    require_auth: false\n    hosts: [skew.test]\n    load_balance: ip_hash\n    conditions: [{path_pattern: \"/skew/*\"}]\n    targets:\n"+targets.String())
	res := buildFlavor(t, cfg, envoy.FlavorEnvoy)
	c := clusterNamed(t, res, "route/skew/0")
	if n := envoyRingSize(c, assignmentNamed(res, "route/skew/0")); n > 1<<16 {
		t.Fatalf("Envoy builds a ring of %d entries (%d MB) for one route", n, n*24>>20)
	}
	// Equal weights keep Envoy's usual ring of about minimum_ring_size entries.
	if n := envoyRingSize(c, &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: assignmentNamed(res, "route/skew/0").GetEndpoints()[0].GetLbEndpoints()[1:]}}}); n != 1026 {
		t.Fatalf("equal weights: ring of %d entries, want 1026", n)
	}
}
