package translate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

var clusterT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// randomTargetsRoute is a route of 1-12 targets drawn from small pools, so that addresses,
// settings and weights repeat: IPs and names, services, weight 0, healthy false, TLS,
// protocols and health paths; any load_balance.
func randomTargetsRoute(rng *rand.Rand, id string) *model.Route {
	r := &model.Route{ID: id, LoadBalance: model.LoadBalancers[rng.IntN(len(model.LoadBalancers))]}
	n := 1 + rng.IntN(12)
	for range n {
		var t model.Target
		switch rng.IntN(5) {
		case 0:
			t.Service = []string{"svc-a", "svc-b"}[rng.IntN(2)]
			t.Port = []int{0, 9090}[rng.IntN(2)]
		case 1:
			t.Host, t.Port = []string{"api.example.com", "localhost"}[rng.IntN(2)], 80
		default:
			t.Host, t.Port = fmt.Sprintf("10.9.0.%d", 1+rng.IntN(4)), []int{80, 81}[rng.IntN(2)]
		}
		if w := rng.IntN(5); w < 4 {
			t.Weight = &w
		}
		if rng.IntN(6) == 0 {
			f := false
			t.Healthy = &f
		}
		t.TLS = rng.IntN(4) == 0
		if t.TLS {
			switch rng.IntN(4) {
			case 0:
				t.TLSSNI = "backend.internal"
			case 1:
				t.TLSInsecureSkipVerify = true
			case 2:
				t.TLSVerifySAN = []string{"backend.internal"}
			}
		}
		t.Protocol = []string{"", "http1", "http2", "grpc"}[rng.IntN(4)]
		if rng.IntN(4) == 0 {
			t.HealthPath = "/hc"
		}
		r.Targets = append(r.Targets, t)
	}
	return r
}

func clusterIndex() *index {
	w := 3
	return newIndex(&model.Snapshot{Services: []*model.Service{
		{ID: "a1", Name: "svc-a", Host: "10.8.0.1", Port: 8080},
		{ID: "a2", Name: "svc-a", Host: "10.8.0.2", Port: 8080, Weight: &w},
		{ID: "b1", Name: "svc-b", Host: "10.8.1.1", Port: 8080},
		{ID: "b2", Name: "svc-b", Host: "svc-b-2.internal", Port: 8080},
	}}, clusterT0)
}

// routeBackends (which reads the route alone, for the route's memo) names exactly the
// clusters routeClusters builds, with the same weights; every target in rotation is carried
// by exactly one cluster, and targets share one only under least_connections or ip_hash,
// with equal settings.
func TestRouteBackendsAgreeWithRouteClusters(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 7))
	idx := clusterIndex()
	merged := 0
	for i := range 2000 {
		r := randomTargetsRoute(rng, fmt.Sprintf("r%d", i))
		clusters, backends, err := routeClusters(r, idx)
		if err != nil {
			if !strings.Contains(err.Error(), "no target is in rotation") {
				t.Fatalf("%s: %v", r.ID, err)
			}
			continue
		}
		if got := routeBackends(r); !reflect.DeepEqual(got, backends) {
			t.Fatalf("%s: routeBackends %v, routeClusters %v", r.ID, got, backends)
		}
		carried := map[int]bool{}
		names := map[string]bool{}
		for gi, tg := range targetGroups(r) {
			g := tg.targets
			c := clusters[gi]
			if c.Name != ClusterName(r.ID, tg.name) || c.Target != g[0] || tg.name > g[0] || names[c.Name] {
				t.Fatalf("%s: group %v is cluster %s (target %d)", r.ID, tg, c.Name, c.Target)
			}
			names[c.Name] = true
			var sum uint32
			for _, ti := range g {
				if carried[ti] {
					t.Fatalf("%s: target %d in two clusters", r.ID, ti)
				}
				carried[ti] = true
				sum += uint32(r.Targets[ti].EffectiveWeight())
			}
			if backends[gi].Weight != sum {
				t.Fatalf("%s: cluster %s weighs %d, its targets %d", r.ID, c.Name, backends[gi].Weight, sum)
			}
			if len(g) == 1 {
				continue
			}
			merged++
			if r.LoadBalance != "least_connections" && r.LoadBalance != "ip_hash" {
				t.Fatalf("%s: %s shares a cluster", r.ID, r.LoadBalance)
			}
			first := r.Targets[g[0]]
			addrs := map[string]bool{}
			for _, ti := range g {
				tt := r.Targets[ti]
				if tt.Service != first.Service || tt.TLS != first.TLS || tt.HealthPath != first.HealthPath ||
					tt.TLSSNI != first.TLSSNI || tt.TLSInsecureSkipVerify != first.TLSInsecureSkipVerify || !slices.Equal(tt.TLSVerifySAN, first.TLSVerifySAN) ||
					(tt.Protocol == "http2" || tt.Protocol == "grpc") != (first.Protocol == "http2" || first.Protocol == "grpc") {
					t.Fatalf("%s: targets %d and %d share a cluster with other settings", r.ID, g[0], ti)
				}
				if tt.Service == "" {
					if strings.Contains(tt.Host, "example") || tt.Host == "localhost" {
						t.Fatalf("%s: host name %s shares a cluster", r.ID, tt.Host)
					}
					if r.LoadBalance == "least_connections" && tt.EffectiveWeight() != first.EffectiveWeight() {
						t.Fatalf("%s: least_connections shares a cluster across weights", r.ID)
					}
					a := fmt.Sprintf("%s:%d", tt.Host, tt.Port)
					if addrs[a] && r.LoadBalance == "least_connections" {
						t.Fatalf("%s: %s twice in one least_connections cluster", r.ID, a)
					}
					addrs[a] = true
				}
			}
			if first.Service == "" && len(c.Endpoints) != len(addrs) {
				t.Fatalf("%s: %d endpoints for %d addresses", r.ID, len(c.Endpoints), len(addrs))
			}
		}
		for ti := range r.Targets {
			tt := r.Targets[ti]
			if in := tt.EffectiveWeight() > 0 && (tt.Healthy == nil || *tt.Healthy); in != carried[ti] {
				t.Fatalf("%s: target %d in rotation %v, carried %v", r.ID, ti, in, carried[ti])
			}
		}
	}
	if merged < 100 {
		t.Fatalf("only %d shared clusters: the generator does not exercise sharing", merged)
	}
}

// Two targets of one service and port under least_connections are one cluster of its
// instances; another port keeps its own. The cluster names its service for status reasons.
func TestServiceTargetsShareOneCluster(t *testing.T) {
	two, five := 2, 5
	r := &model.Route{ID: "r", LoadBalance: "least_connections", Targets: []model.Target{
		{Service: "svc-a", Weight: &two}, {Service: "svc-a", Weight: &five}, {Service: "svc-a", Port: 9090},
	}}
	clusters, backends, err := routeClusters(r, clusterIndex())
	if err != nil {
		t.Fatal(err)
	}
	want := []ir.Backend{{Cluster: "route/r/0", Weight: 7}, {Cluster: "route/r/2", Weight: 1}}
	if !reflect.DeepEqual(backends, want) {
		t.Fatalf("backends %v, want %v", backends, want)
	}
	if c := clusters[0]; c.Service != "svc-a" || len(c.Endpoints) != 2 || c.Endpoints[1].Weight != 3 || c.Endpoints[0].Port != 8080 {
		t.Fatalf("cluster %+v", c)
	}
	if c := clusters[1]; c.Endpoints[0].Port != 9090 || c.Target != 2 {
		t.Fatalf("cluster %+v", c)
	}
}

// Shared by ip_hash or least_connections, target weights become endpoint weights, which
// Envoy and grpc-go cap at 2^32-1 per locality: above it the route is refused with the
// reason (not wrapped around into a small weight).
func TestSharedClusterWeightOverflow(t *testing.T) {
	mk := func(lb string, last int) *model.Route {
		r := &model.Route{ID: "heavy", LoadBalance: lb}
		for i := range 4295 {
			w := 1_000_000
			if i == 4294 {
				w = last
			}
			r.Targets = append(r.Targets, model.Target{Host: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 8080, Weight: &w})
		}
		return r
	}
	// Weights without a common divisor: the endpoint weights themselves overflow.
	_, _, err := routeClusters(mk("ip_hash", 999_999), clusterIndex())
	if err == nil || !strings.Contains(err.Error(), "sum to 4294999999 as endpoint weights") {
		t.Errorf("ip_hash: %v", err)
	}
	// Equal weights: endpoint weights 1 each, and the route's one cluster carries every
	// target: Envoy and proxyless clients get a plain cluster, no weight, nothing to refuse.
	clusters, backends, err := routeClusters(mk("least_connections", 1_000_000), clusterIndex())
	if err != nil || len(clusters) != 1 || len(backends) != 1 || backends[0].Weight != 1 {
		t.Errorf("least_connections, one cluster: %v %v", backends, err)
	}
	if bs := routeBackends(mk("least_connections", 1_000_000)); !reflect.DeepEqual(bs, backends) {
		t.Errorf("routeBackends %v, routeClusters %v", bs, backends)
	}
	// Clusters whose weights overflow in all are weighed by their proportions (divided by
	// their greatest common divisor): 5,000 targets of weight 1,000,000 under round_robin.
	rr := mk("round_robin", 1_000_000)
	rr.Targets = append(rr.Targets, rr.Targets[:705]...)
	for i := range rr.Targets[4295:] {
		rr.Targets[4295+i].Port = 9090
	}
	if _, backends, err := routeClusters(rr, clusterIndex()); err != nil || len(backends) != 5000 || backends[0].Weight != 1 || !reflect.DeepEqual(routeBackends(rr), backends) {
		t.Errorf("round_robin, 5000 clusters: %v", err)
	}
	// No common divisor: a cluster weighing more than 2^32-1 is refused with the reason,
	// and routeBackends caps instead of wrapping around.
	heavy := mk("least_connections", 1_000_000)
	one := 1
	heavy.Targets = append(heavy.Targets, model.Target{Host: "10.7.0.1", Port: 80, Weight: &one})
	_, _, err = routeClusters(heavy, clusterIndex())
	if err == nil || !strings.Contains(err.Error(), "sum to 4295000000") || !strings.Contains(err.Error(), "4294967295") {
		t.Errorf("least_connections, two clusters: %v", err)
	}
	if bs := routeBackends(heavy); len(bs) != 2 || bs[0].Weight != math.MaxUint32 {
		t.Errorf("routeBackends must cap, not wrap: %v", bs)
	}
	// One target less fits.
	r := mk("ip_hash", 999_999)
	r.Targets = r.Targets[1:]
	clusters, _, err = routeClusters(r, clusterIndex())
	if err != nil || len(clusters) != 1 || len(clusters[0].Endpoints) != 4294 {
		t.Errorf("4294 targets: %v", err)
	}
}

// Instance weights summing above 2^32-1 (more than 4,294 instances at the 1,000,000 the API
// allows) are scaled down in proportion, none to 0.
func TestInstanceWeightsScaledIntoOneLocality(t *testing.T) {
	var inst []*model.Service
	for i := range 5000 {
		w := 1_000_000
		if i == 0 {
			w = 1
		}
		inst = append(inst, &model.Service{ID: fmt.Sprint(i), Name: "big", Host: fmt.Sprintf("10.5.%d.%d", i/250, i%250+1), Port: 8080, Weight: &w})
	}
	_, eps := instanceEndpoints(inst, 0)
	var sum uint64
	var light, heavy uint32
	for _, e := range eps {
		sum += uint64(e.Weight)
		if e.Weight == 0 {
			t.Fatalf("%s has weight 0", e.Host)
		}
		if e.Host == "10.5.0.1" {
			light = e.Weight
		} else {
			heavy = e.Weight
		}
	}
	if sum > math.MaxUint32 || light != 1 || heavy < 858_000 {
		t.Fatalf("sum %d, light %d, heavy %d", sum, light, heavy)
	}
	// Under the limit nothing changes.
	_, small := instanceEndpoints(inst[:10], 0)
	if small[0].Weight != 1 || small[1].Weight != 1_000_000 {
		t.Fatalf("weights changed below the limit: %v", small[:2])
	}
}

// A shared cluster keeps its name when the target it is named after leaves rotation
// (healthy: false, or weight 0 under ip_hash): the others stay in the same cluster, so
// Envoy keeps its connection pools, health-check and outlier state and proxyless clients
// their subchannels, instead of building a new cluster for the same endpoints.
func TestSharedClusterKeepsItsNameWhenItsFirstTargetLeavesRotation(t *testing.T) {
	off, zero := false, 0
	for _, lb := range []string{"ip_hash", "least_connections"} {
		mk := func(first model.Target) *model.Route {
			return &model.Route{ID: "r", LoadBalance: lb, Targets: []model.Target{first,
				{Host: "10.0.0.2", Port: 80}, {Host: "10.0.0.3", Port: 80}}}
		}
		in := model.Target{Host: "10.0.0.1", Port: 80}
		unhealthy := in
		unhealthy.Healthy = &off
		variants := map[string]model.Target{"in rotation": in, "healthy false": unhealthy}
		if lb == "ip_hash" {
			drained := in
			drained.Weight = &zero
			variants["weight 0"] = drained
		}
		for what, first := range variants {
			r := mk(first)
			clusters, backends, err := routeClusters(r, clusterIndex())
			if err != nil {
				t.Fatal(err)
			}
			if len(clusters) != 1 || clusters[0].Name != "route/r/0" || backends[0].Cluster != "route/r/0" {
				t.Errorf("%s, first target %s: clusters %v", lb, what, clusterNames(clusters))
			}
			if got := routeBackends(r); !reflect.DeepEqual(got, backends) {
				t.Errorf("%s, first target %s: routeBackends %v, routeClusters %v", lb, what, got, backends)
			}
		}
	}
}

// Under ip_hash a repeated address adds its weight to the one endpoint of that address:
// a cluster of its own would take part of the traffic away from the hash (the weighted pick
// between clusters is per request), so the same client would reach several backends.
func TestIPHashRepeatedAddressAddsToOneEndpoint(t *testing.T) {
	two := 2
	r := &model.Route{ID: "r", LoadBalance: "ip_hash", Targets: []model.Target{
		{Host: "10.0.0.1", Port: 80}, {Host: "10.0.0.2", Port: 80, Weight: &two}, {Host: "::ffff:10.0.0.1", Port: 80, Weight: &two}}}
	clusters, backends, err := routeClusters(r, clusterIndex())
	if err != nil {
		t.Fatal(err)
	}
	if len(clusters) != 1 {
		t.Fatalf("clusters %v", clusterNames(clusters))
	}
	want := []ir.Endpoint{{Host: "10.0.0.1", Port: 80, Weight: 3}, {Host: "10.0.0.2", Port: 80, Weight: 2}}
	if !reflect.DeepEqual(clusters[0].Endpoints, want) {
		t.Fatalf("endpoints %v, want %v", clusters[0].Endpoints, want)
	}
	if len(backends) != 1 || backends[0].Weight != 5 || !reflect.DeepEqual(routeBackends(r), backends) {
		t.Fatalf("backends %v, routeBackends %v", backends, routeBackends(r))
	}
}

func clusterNames(cs []*ir.Cluster) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// Each TLS field of a target lands in its cluster: the SNI (a host name target's own, or
// tls_sni; none for an IP), the name check (tls_verify_san; else the SNI; else an IP
// target's addresses; else, for a service, each instance's host name), the trusted CA
// (tls_ca_pem, else the bundle file), and skip verify alone with nothing to verify.
func TestTargetTLSFieldsReachTheCluster(t *testing.T) {
	idx := clusterIndex()
	idx.caFile = "/bundle.pem"
	dns := func(v string) ir.SAN { return ir.SAN{Kind: ir.SANDNS, Value: v} }
	ip := func(v string) ir.SAN { return ir.SAN{Kind: ir.SANIP, Value: v} }
	for _, tc := range []struct {
		name string
		lb   string
		t    []model.Target
		want ir.Cluster // the TLS fields only
	}{
		{name: "host name", t: []model.Target{{Host: "api.example.com.", Port: 443, TLS: true}},
			want: ir.Cluster{SNI: "api.example.com", TrustedCAFile: "/bundle.pem", SANs: []ir.SAN{dns("api.example.com")}}},
		{name: "tls_sni replaces the name sent and checked", t: []model.Target{{Host: "api.example.com", Port: 443, TLS: true, TLSSNI: "edge.example.com"}},
			want: ir.Cluster{SNI: "edge.example.com", TrustedCAFile: "/bundle.pem", SANs: []ir.SAN{dns("edge.example.com")}}},
		{name: "tls_verify_san replaces the SNI check", t: []model.Target{{Host: "api.example.com", Port: 443, TLS: true, TLSCAPEM: "PEM", TLSVerifySAN: []string{"a.example", "2001:0db8::1"}}},
			want: ir.Cluster{SNI: "api.example.com", TrustedCAPEM: "PEM", SANs: []ir.SAN{dns("a.example"), ip("2001:db8::1")}}},
		{name: "IP target: its address", t: []model.Target{{Host: "10.0.0.1", Port: 443, TLS: true}},
			want: ir.Cluster{TrustedCAFile: "/bundle.pem", SANs: []ir.SAN{ip("10.0.0.1")}}},
		{name: "IP targets sharing a cluster: every address", lb: "ip_hash", t: []model.Target{{Host: "10.0.0.2", Port: 443, TLS: true}, {Host: "10.0.0.1", Port: 443, TLS: true}},
			want: ir.Cluster{TrustedCAFile: "/bundle.pem", SANs: []ir.SAN{ip("10.0.0.1"), ip("10.0.0.2")}}},
		{name: "service: each instance's host name", t: []model.Target{{Service: "svc-b", TLS: true}},
			want: ir.Cluster{TrustedCAFile: "/bundle.pem", AutoHostSNI: true}},
		// Envoy's auto_host_sni sends nothing for an endpoint without a host name, and then
		// checks no name at all: instances registered by IP address are checked by address.
		{name: "service registered by IP: every instance's address", t: []model.Target{{Service: "svc-a", TLS: true}},
			want: ir.Cluster{TrustedCAFile: "/bundle.pem", SANs: []ir.SAN{ip("10.8.0.1"), ip("10.8.0.2")}}},
		{name: "service with tls_sni", t: []model.Target{{Service: "svc-b", TLS: true, TLSSNI: "b.internal"}},
			want: ir.Cluster{SNI: "b.internal", TrustedCAFile: "/bundle.pem", SANs: []ir.SAN{dns("b.internal")}}},
		{name: "skip verify", t: []model.Target{{Host: "api.example.com", Port: 443, TLS: true, TLSInsecureSkipVerify: true}},
			want: ir.Cluster{SNI: "api.example.com", SkipVerify: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &model.Route{ID: "r", LoadBalance: tc.lb, Targets: tc.t}
			cs, _, err := routeClusters(r, idx)
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != 1 {
				t.Fatalf("%d clusters", len(cs))
			}
			c := cs[0]
			got := ir.Cluster{SNI: c.SNI, TrustedCAPEM: c.TrustedCAPEM, TrustedCAFile: c.TrustedCAFile, SANs: c.SANs, AutoHostSNI: c.AutoHostSNI, SkipVerify: c.SkipVerify}
			if !c.TLS || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// IP targets whose TLS verification differs never share a cluster, and the route's
// warnings name skip verify and service instances without a host name.
func TestTLSVerificationSplitsClustersAndWarns(t *testing.T) {
	r := &model.Route{ID: "r", LoadBalance: "least_connections", Targets: []model.Target{
		{Host: "10.0.0.1", Port: 443, TLS: true, TLSCAPEM: "A"},
		{Host: "10.0.0.2", Port: 443, TLS: true, TLSCAPEM: "B"},
		{Host: "10.0.0.3", Port: 443, TLS: true, TLSInsecureSkipVerify: true},
		{Service: "svc-b", TLS: true},
	}}
	cs, _, err := routeClusters(r, clusterIndex())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 4 {
		t.Fatalf("%d clusters, want 4: %v", len(cs), clusterNames(cs))
	}
	w := routeWarnings(r, cs)
	if len(w) != 2 || !strings.HasPrefix(w[0], "targets[2].tls_insecure_skip_verify: the upstream certificate is not verified") ||
		!strings.HasPrefix(w[1], "targets[3].tls: instance 10.8.1.1 of service svc-b is registered by IP address") {
		t.Fatalf("warnings %q", w)
	}
}

// A mirror carries the route's requests, credentials included: a TLS mirror target is
// verified as a target is (the CA file and the name), and skipping verification is a
// warning on the route.
func TestMirrorTargetTLSIsVerified(t *testing.T) {
	idx := clusterIndex()
	idx.caFile = "/etc/ssl/certs/ca-certificates.crt"
	r := &model.Route{ID: "m", Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}
	c, err := mirrorCluster(r, &model.Target{Host: "shadow.example.com", Port: 443, TLS: true}, idx)
	if err != nil {
		t.Fatal(err)
	}
	if c.TrustedCAFile != idx.caFile || c.SNI != "shadow.example.com" || len(c.SANs) != 1 || c.SANs[0].Value != "shadow.example.com" || c.SkipVerify {
		t.Fatalf("mirror cluster TLS %+v", c)
	}
	c, err = mirrorCluster(r, &model.Target{Host: "10.0.0.9", Port: 443, TLS: true}, idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.SANs) != 1 || c.SANs[0].Kind != ir.SANIP || c.SANs[0].Value != "10.0.0.9" {
		t.Fatalf("IP mirror SANs %+v", c.SANs)
	}
	r.Mirror = &model.Mirror{Target: &model.Target{Host: "10.0.0.9", Port: 443, TLS: true, TLSInsecureSkipVerify: true}}
	if w := routeWarnings(r, nil); len(w) != 1 || !strings.HasPrefix(w[0], "mirror.target.tls_insecure_skip_verify:") {
		t.Fatalf("warnings %q", w)
	}
	// A mirror service with an instance registered by IP among host names: the warning
	// names the mirror's field.
	r.Mirror = &model.Mirror{Target: &model.Target{Service: "svc-b", TLS: true}}
	c, err = mirrorCluster(r, r.Mirror.Target, idx)
	if err != nil {
		t.Fatal(err)
	}
	if w := routeWarnings(r, []*ir.Cluster{c}); len(w) != 1 || !strings.HasPrefix(w[0], "mirror.target.tls: instance 10.8.1.1 of service svc-b") {
		t.Fatalf("warnings %q", w)
	}
}
