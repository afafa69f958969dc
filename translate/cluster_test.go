package translate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
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
		for gi, g := range targetGroups(r) {
			c := clusters[gi]
			if c.Name != ClusterName(r.ID, g[0]) || c.Target != g[0] {
				t.Fatalf("%s: group %v is cluster %s (target %d)", r.ID, g, c.Name, c.Target)
			}
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
					if addrs[a] {
						t.Fatalf("%s: %s twice in one cluster", r.ID, a)
					}
					addrs[a] = true
				}
			}
			if first.Service == "" && len(c.Endpoints) != len(g) {
				t.Fatalf("%s: %d endpoints for %d targets", r.ID, len(c.Endpoints), len(g))
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
	// Equal weights: endpoint weights 1 each, but the cluster's route weight overflows.
	_, _, err = routeClusters(mk("least_connections", 1_000_000), clusterIndex())
	if err == nil || !strings.Contains(err.Error(), "sum to 4295000000") || !strings.Contains(err.Error(), "4294967295") {
		t.Errorf("least_connections: %v", err)
	}
	if bs := routeBackends(mk("least_connections", 1_000_000)); len(bs) != 1 || bs[0].Weight != math.MaxUint32 {
		t.Errorf("routeBackends must cap, not wrap: %v", bs)
	}
	// One target less fits.
	r := mk("ip_hash", 999_999)
	r.Targets = r.Targets[1:]
	clusters, _, err := routeClusters(r, clusterIndex())
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
