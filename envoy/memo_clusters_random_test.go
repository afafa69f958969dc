package envoy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// randomBalancedRoute is a route of 1-6 targets over small pools, so that targets share
// clusters (least_connections, ip_hash), addresses repeat, and targets leave rotation.
func randomBalancedRoute(rng *rand.Rand, id string, rev uint64) *model.Route {
	r := &model.Route{ID: id, Hosts: []string{id + ".test"}, Conditions: []model.Condition{{PathPrefix: "/" + id}},
		LoadBalance: model.LoadBalancers[rng.IntN(len(model.LoadBalancers))], Meta: model.Meta{Revision: rev}}
	no := false
	r.RequireAuth = &no
	for range 1 + rng.IntN(6) {
		var t model.Target
		switch rng.IntN(4) {
		case 0:
			t.Service = []string{"svc-a", "svc-b"}[rng.IntN(2)]
		case 1:
			t.Host, t.Port = "backend.example", 80
		default:
			t.Host, t.Port = fmt.Sprintf("10.9.0.%d", 1+rng.IntN(3)), 80
		}
		if w := rng.IntN(4); w < 3 {
			t.Weight = &w
		}
		if rng.IntN(6) == 0 {
			t.Healthy = &no
		}
		t.TLS = rng.IntN(5) == 0
		if rng.IntN(5) == 0 {
			t.HealthPath = "/hc"
		}
		r.Targets = append(r.Targets, t)
	}
	return r
}

// randomInstance is an instance of svc-a or svc-b registered by IP or by host name.
func randomInstance(rng *rand.Rand, id string, rev uint64) *model.Service {
	s := &model.Service{ID: id, Name: []string{"svc-a", "svc-b"}[rng.IntN(2)], Port: 8080, Meta: model.Meta{Revision: rev}}
	if rng.IntN(3) == 0 {
		s.Host = "inst-" + id + ".internal"
	} else {
		s.Host = fmt.Sprintf("10.8.0.%d", 1+rng.IntN(3))
	}
	if rng.IntN(2) == 0 {
		w := 1 + rng.IntN(3)
		s.Weight = &w
	}
	return s
}

// TestMemoMatchesFreshUnderRandomClusterEdits: routes switching load_balance, targets
// joining and leaving shared clusters, instances going from IP address to host name and back
// (EDS, STRICT_DNS or LOGICAL_DNS, or not servable by proxyless clients): every revision,
// translated by a memoizing Translator and built by both flavors with their memos and the
// shared memo, equals a fresh translation built without memos.
func TestMemoMatchesFreshUnderRandomClusterEdits(t *testing.T) {
	// What the revisions held: the comparison proves little if the generator never makes
	// these.
	seen := map[string]int{}
	defer func() {
		t.Logf("counts: %v", seen)
		for _, what := range []string{"EDS", "STRICT_DNS", "LOGICAL_DNS", "shared", "least_request", "RING_HASH", "memo entries", "omitted"} {
			if !t.Failed() && seen[what] < 20 {
				t.Errorf("only %d of %s: %v", seen[what], what, seen)
			}
		}
	}()
	for seed := range uint64(60) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 15))
			to := translate.Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return time.Unix(1e9, 0) }}
			tr := translate.NewTranslator(to)
			memos := map[Flavor]*Memo{FlavorEnvoy: NewMemo(), FlavorGRPC: NewMemo()}
			for _, m := range memos {
				m.verify = true
			}
			shared := NewSharedMemo()
			rev := uint64(0)
			routes := map[string]*model.Route{}
			instances := map[string]*model.Service{}
			for _, id := range []string{"r1", "r2", "r3"} {
				rev++
				routes[id] = randomBalancedRoute(rng, id, rev)
			}
			for i := range 4 {
				rev++
				id := fmt.Sprintf("i%d", i)
				instances[id] = randomInstance(rng, id, rev)
			}
			var log []string
			for step := range 30 {
				rev++
				switch rng.IntN(4) {
				case 0:
					id := fmt.Sprintf("r%d", 1+rng.IntN(3))
					routes[id] = randomBalancedRoute(rng, id, rev)
					log = append(log, "route "+id)
				case 1:
					// The same targets under another load_balance.
					id := fmt.Sprintf("r%d", 1+rng.IntN(3))
					n := *routes[id]
					n.LoadBalance = model.LoadBalancers[rng.IntN(len(model.LoadBalancers))]
					n.Meta.Revision = rev
					routes[id] = &n
					log = append(log, "load_balance "+id+" "+n.LoadBalance)
				case 2:
					id := fmt.Sprintf("i%d", rng.IntN(5))
					instances[id] = randomInstance(rng, id, rev)
					log = append(log, "instance "+id+" "+instances[id].Host)
				default:
					id := fmt.Sprintf("i%d", rng.IntN(5))
					delete(instances, id)
					log = append(log, "delete instance "+id)
				}
				snap := &model.Snapshot{Revision: rev, Settings: &model.Settings{ID: model.SettingsID}}
				for _, id := range []string{"r1", "r2", "r3"} {
					snap.Routes = append(snap.Routes, routes[id])
				}
				for i := range 5 {
					if s := instances[fmt.Sprintf("i%d", i)]; s != nil {
						snap.Services = append(snap.Services, s)
					}
				}
				cfg, err := tr.Translate(snap)
				if err != nil {
					t.Fatal(err)
				}
				fresh, err := translate.Translate(snap, to)
				if err != nil {
					t.Fatal(err)
				}
				shared.Begin()
				for _, f := range []Flavor{FlavorEnvoy, FlavorGRPC} {
					got, gerr := Build(cfg, Options{Flavor: f, Memo: memos[f], Shared: shared})
					want, werr := Build(fresh, Options{Flavor: f})
					if (gerr == nil) != (werr == nil) {
						t.Fatalf("step %d flavor %d after %q: memo error %v, fresh error %v", step, f, log, gerr, werr)
					}
					if gerr != nil {
						continue
					}
					equalResources(t, fmt.Sprintf("step %d flavor %d after %q", step, f, log), got, want)
					for _, c := range got.Clusters {
						seen[c.GetType().String()]++
						seen[c.GetLbPolicy().String()]++
						if c.GetLoadBalancingPolicy() != nil {
							seen["least_request"]++
						}
					}
					for _, cla := range got.Endpoints {
						if n := len(cla.GetEndpoints()); n > 0 && len(cla.GetEndpoints()[0].GetLbEndpoints()) > 1 && cla.GetClusterName()[:6] == "route/" {
							seen["shared"]++
						}
					}
					if !maps.Equal(got.RouteErrors, want.RouteErrors) || !maps.Equal(got.Omitted, want.Omitted) {
						t.Fatalf("step %d flavor %d after %q: route errors %v, omitted %v; fresh %v, %v", step, f, log, got.RouteErrors, got.Omitted, want.RouteErrors, want.Omitted)
					}
					if len(got.Omitted) > 0 {
						seen["omitted"]++
					}
				}
				shared.End()
			}
			seen["memo entries"] += memos[FlavorGRPC].Len()
		})
	}
}
