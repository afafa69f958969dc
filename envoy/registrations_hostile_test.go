package envoy_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// Registrations are written by discovery clients, not by the owners of the routes that
// target the service: whatever instances the API accepts (one address in several
// spellings, repeated, names, the largest weights, thousands of them), no route is refused
// for them and no build fails, in either flavor, under any load_balance.
func TestHostileRegistrationsRefuseNoRoute(t *testing.T) {
	hosts := []string{"10.0.0.1", "::ffff:10.0.0.1", "0:0:0:0:0:ffff:a00:1", "10.0.0.2", "2001:db8::1", "2001:DB8::1",
		"2001:db8:0::1", "svc.internal", "SVC.internal", "svc.internal.", "010.0.0.1", "localhost"}
	rng := rand.New(rand.NewPCG(1, 15))
	for round := range 40 {
		snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}}
		n := 1 + rng.IntN(8)
		if round%10 == 9 {
			n = 4400 // more than 4,294 instances of weight 1,000,000 overflow one locality
		}
		for i := range n {
			s := &model.Service{ID: fmt.Sprintf("i%d", i), Name: "shared", Host: hosts[rng.IntN(len(hosts))], Port: 8080 + rng.IntN(2)}
			if n > 100 {
				s.Host = fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)
			}
			w := []int{1, 1_000_000, 999_999}[rng.IntN(3)]
			if n > 100 {
				w = 1_000_000
			}
			s.Weight = &w
			if errs := s.Validate(); len(errs) > 0 {
				t.Fatalf("%s: %v", s.Host, errs)
			}
			snap.Services = append(snap.Services, s)
		}
		no := false
		for i, lb := range model.LoadBalancers {
			snap.Routes = append(snap.Routes, &model.Route{ID: fmt.Sprintf("r%d", i), Hosts: []string{"r.test"}, RequireAuth: &no,
				LoadBalance: lb, Conditions: []model.Condition{{PathPrefix: fmt.Sprintf("/%d", i)}},
				Targets: []model.Target{{Service: "shared"}, {Service: "shared", Port: 9090}, {Host: "10.9.9.9", Port: 80}}})
		}
		cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000"})
		if err != nil || len(cfg.RouteErrors) > 0 {
			t.Fatalf("round %d: %v %v", round, err, cfg.RouteErrors)
		}
		for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
			res, err := envoy.Build(cfg, envoy.Options{Flavor: fl})
			if err != nil {
				t.Fatalf("round %d flavor %d: the build fails: %v", round, fl, err)
			}
			if len(res.RouteErrors) > 0 {
				t.Fatalf("round %d flavor %d: routes refused: %v", round, fl, res.RouteErrors)
			}
		}
	}
}
