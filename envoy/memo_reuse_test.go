package envoy

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// reuseIR is a translated configuration with routes of several shapes over a few services.
func reuseIR(t *testing.T) *ir.Config {
	t.Helper()
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}}
	for i := range 6 {
		snap.Services = append(snap.Services, &model.Service{ID: fmt.Sprintf("s%d", i), Name: fmt.Sprintf("svc-%d", i%3),
			Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080})
	}
	no := false
	for i := range 24 {
		r := &model.Route{
			ID:          fmt.Sprintf("r%02d", i),
			Hosts:       []string{fmt.Sprintf("h%d.test", i%3)},
			Conditions:  []model.Condition{{PathPattern: fmt.Sprintf("/p%d/*", i)}, {PathPrefix: fmt.Sprintf("/q%d", i), Method: "POST"}},
			Targets:     []model.Target{{Service: fmt.Sprintf("svc-%d", i%3)}},
			Timeout:     model.Duration(time.Duration(i+1) * time.Second),
			RequireAuth: &no,
		}
		switch i % 4 {
		case 0:
			r.LoadBalance = "ip_hash"
		case 1:
			r.Targets = append(r.Targets, model.Target{Host: fmt.Sprintf("b%d.example", i), Port: 443, TLS: true})
		case 2:
			r.StickySession = &model.StickySession{}
		case 3:
			r.Targets[0].HealthPath = "/health"
		}
		if i%6 != 5 {
			// Most routes reach the gRPC flavor too; a method condition leaves the others
			// out of it (grpcRouteOmission), so both paths go through the memo.
			r.Conditions[1].Method = ""
		}
		snap.Routes = append(snap.Routes, r)
	}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("route errors: %v", cfg.RouteErrors)
	}
	return cfg
}

// editIR is the next revision of cfg as the memoizing translator makes it: new virtual hosts
// and a new Config, the unchanged routes and clusters the very same objects, the changed ones
// new objects (one route changed, one left out, a cluster and a service's endpoints changed).
func editIR(cfg *ir.Config) *ir.Config {
	next := *cfg
	next.VirtualHosts = nil
	gone := ""
	for i, vh := range cfg.VirtualHosts {
		nv := &ir.VirtualHost{Name: vh.Name, Domains: vh.Domains}
		for j, r := range vh.Routes {
			switch {
			case i == 0 && j == 1:
				c := *r
				c.Timeout += time.Second
				r = &c
			case i == 1 && j == 2:
				gone = r.RouteID
				continue
			}
			nv.Routes = append(nv.Routes, r)
		}
		next.VirtualHosts = append(next.VirtualHosts, nv)
	}
	next.Clusters = nil
	for _, c := range cfg.Clusters {
		switch {
		case c.RouteID == gone && gone != "":
			continue
		case c.RouteID == "r05":
			n := *c
			n.ConnectTimeout += time.Second
			c = &n
		case c.RouteID == "" && c.Name == translate.ServiceClusterName("svc-1"):
			n := *c
			n.Endpoints = append([]ir.Endpoint(nil), c.Endpoints[1:]...)
			c = &n
		}
		next.Clusters = append(next.Clusters, c)
	}
	return &next
}

// sameIR is the next revision of cfg when nothing Envoy reads changed (a WAF ban): new
// virtual hosts around the same routes, the service clusters new objects of the same
// content; with endpoints, one service cluster also has other endpoints (a heartbeat).
func sameIR(cfg *ir.Config, endpoints bool) *ir.Config {
	next := *cfg
	next.VirtualHosts = nil
	for _, vh := range cfg.VirtualHosts {
		next.VirtualHosts = append(next.VirtualHosts, &ir.VirtualHost{Name: vh.Name, Domains: vh.Domains, Routes: append([]*ir.Route(nil), vh.Routes...)})
	}
	next.Clusters = nil
	changed := false
	for _, c := range cfg.Clusters {
		if c.RouteID == "" {
			n := *c
			if endpoints && !changed && len(c.Endpoints) > 1 {
				n.Endpoints = append([]ir.Endpoint(nil), c.Endpoints[1:]...)
				changed = true
			}
			c = &n
		}
		next.Clusters = append(next.Clusters, c)
	}
	return &next
}

func equalResources(t *testing.T, what string, got, want *Resources) {
	t.Helper()
	if len(got.Listeners) != len(want.Listeners) || len(got.Routes) != len(want.Routes) || len(got.Clusters) != len(want.Clusters) || len(got.Endpoints) != len(want.Endpoints) {
		t.Fatalf("%s: resource counts differ", what)
	}
	for i := range got.Listeners {
		if !proto.Equal(got.Listeners[i], want.Listeners[i]) {
			t.Fatalf("%s: listener %s differs", what, want.Listeners[i].Name)
		}
	}
	for i := range got.Routes {
		if !proto.Equal(got.Routes[i], want.Routes[i]) {
			t.Fatalf("%s: route configuration %s differs", what, want.Routes[i].Name)
		}
	}
	for i := range got.Clusters {
		if !proto.Equal(got.Clusters[i], want.Clusters[i]) {
			t.Fatalf("%s: cluster %s differs", what, want.Clusters[i].Name)
		}
	}
	for i := range got.Endpoints {
		if !proto.Equal(got.Endpoints[i], want.Endpoints[i]) {
			t.Fatalf("%s: endpoints %s differ", what, want.Endpoints[i].ClusterName)
		}
	}
	if !maps.Equal(got.Omitted, want.Omitted) || !maps.Equal(got.RouteErrors, want.RouteErrors) {
		t.Fatalf("%s: omitted or failed routes differ: %v %v / %v %v", what, got.Omitted, got.RouteErrors, want.Omitted, want.RouteErrors)
	}
	for _, p := range [][2]map[string]uint64{{got.ListenerHashes, want.ListenerHashes}, {got.RouteHashes, want.RouteHashes},
		{got.ClusterHashes, want.ClusterHashes}, {got.EndpointHashes, want.EndpointHashes}} {
		if !maps.Equal(p[0], p[1]) {
			t.Fatalf("%s: content hashes differ", what)
		}
	}
}

// TestMemoReuseOfIRObjectsEqualsFreshBuild: a memo fed the same IR objects again (recalled
// by position, not hashed), with some changed, removed and rebuilt in between, builds what a
// build without a memo builds.
func TestMemoReuseOfIRObjectsEqualsFreshBuild(t *testing.T) {
	for _, f := range []Flavor{FlavorEnvoy, FlavorGRPC} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			memo := NewMemo()
			memo.verify = true
			cfg := reuseIR(t)
			next := editIR(cfg)
			traced := *next
			traced.OTLP = &ir.Address{Host: "otel", Port: 4317}
			ban := sameIR(next, false)
			beat := sameIR(ban, true)
			for i, c := range []*ir.Config{cfg, cfg, next, next, ban, beat, sameIR(beat, true), &traced, cfg, editIR(next)} {
				got, err := Build(c, Options{Flavor: f, Memo: memo})
				if err != nil {
					t.Fatal(err)
				}
				want, err := Build(c, Options{Flavor: f})
				if err != nil {
					t.Fatal(err)
				}
				equalResources(t, fmt.Sprintf("revision %d", i), got, want)
			}
		})
	}
}

// TestMemoDetectsMutatedIR: IR objects are immutable once translated (the memo recalls them
// by identity); with verification on (race-enabled builds, as the tests run) a route or
// cluster changed in place after it was built fails loudly instead of serving the old build.
func TestMemoDetectsMutatedIR(t *testing.T) {
	for name, mutate := range map[string]func(*ir.Config){
		"route":   func(c *ir.Config) { c.VirtualHosts[0].Routes[0].Timeout += time.Second },
		"cluster": func(c *ir.Config) { c.Clusters[0].ConnectTimeout += time.Second },
		"endpoints": func(c *ir.Config) {
			for _, cl := range c.Clusters {
				if cl.Discovery == ir.DiscoveryEDS && len(cl.Endpoints) > 0 {
					cl.Endpoints[0].Port++
					return
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			memo := NewMemo()
			memo.verify = true
			cfg := reuseIR(t)
			if _, err := Build(cfg, Options{Memo: memo}); err != nil {
				t.Fatal(err)
			}
			mutate(cfg)
			defer func() {
				if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "changed after it was built") {
					t.Fatalf("a mutated IR object was reused: recovered %v", p)
				}
			}()
			_, _ = Build(cfg, Options{Memo: memo})
		})
	}
}

// TestMemoVerifyRecallOfDroppedRoutes: a route of several conditions whose first one Envoy
// refuses is dropped as a whole (its other conditions are never built), and a route whose
// cluster fails is dropped before its routes are built: a Build of the same input again
// returns the same Resources, and the verification of that recall (race-enabled builds)
// must not take those routes, which have no memo entry, for routes changed in place.
func TestMemoVerifyRecallOfDroppedRoutes(t *testing.T) {
	for _, f := range []Flavor{FlavorEnvoy, FlavorGRPC} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			cfg := reuseIR(t)
			next := *cfg
			next.VirtualHosts = nil
			badHeader, badCluster := "", ""
			// Routes the gRPC flavor leaves out by design are never built there: the bad
			// ones are picked among the others.
			omitted := map[string]bool{}
			for _, vh := range cfg.VirtualHosts {
				for _, r := range vh.Routes {
					omitted[r.RouteID] = omitted[r.RouteID] || grpcRouteOmission(r) != ""
				}
			}
			for _, vh := range cfg.VirtualHosts {
				nv := &ir.VirtualHost{Name: vh.Name, Domains: vh.Domains}
				for _, r := range vh.Routes {
					if badHeader == "" && r.Name == r.RouteID && !omitted[r.RouteID] {
						badHeader = r.RouteID
					}
					if r.RouteID == badHeader {
						// Passes the IR's checks, refused by Envoy's header format rule.
						c := *r
						c.RequestHeaders = ir.HeaderOps{Add: []ir.HeaderValue{{Name: "x-a", Value: "%NOPE%"}}}
						r = &c
					}
					nv.Routes = append(nv.Routes, r)
				}
				next.VirtualHosts = append(next.VirtualHosts, nv)
			}
			next.Clusters = nil
			for _, c := range cfg.Clusters {
				if badCluster == "" && c.RouteID != "" && c.RouteID != badHeader && !omitted[c.RouteID] {
					// Passes the IR's checks, refused by Envoy's outlier ejection rule.
					n := *c
					n.Outlier = &ir.Outlier{BaseEjectionTime: time.Hour, Interval: time.Second}
					badCluster, c = c.RouteID, &n
				}
				next.Clusters = append(next.Clusters, c)
			}
			memo := NewMemo()
			memo.verify = true
			want, err := Build(&next, Options{Flavor: f})
			if err != nil {
				t.Fatal(err)
			}
			if _, bad := want.RouteErrors[badHeader]; !bad {
				t.Fatalf("route %s with a bad header was served: %v", badHeader, want.RouteErrors)
			}
			if _, bad := want.RouteErrors[badCluster]; !bad {
				t.Fatalf("route %s with a bad cluster was served: %v", badCluster, want.RouteErrors)
			}
			for i := range 2 {
				got, err := Build(&next, Options{Flavor: f, Memo: memo})
				if err != nil {
					t.Fatal(err)
				}
				equalResources(t, fmt.Sprintf("build %d", i), got, want)
			}
		})
	}
}

// flipOmissions is the next revision of cfg with the gRPC flavor's choice turned around for
// some routes: r00 and r01 gain a check of their own (left out), r05 loses its method
// condition (served), as new route objects.
func flipOmissions(cfg *ir.Config) *ir.Config {
	next := *cfg
	next.VirtualHosts = nil
	for _, vh := range cfg.VirtualHosts {
		nv := &ir.VirtualHost{Name: vh.Name, Domains: vh.Domains}
		for _, r := range vh.Routes {
			switch r.RouteID {
			case "r00", "r01":
				c := *r
				c.OwnChecks = []string{"require_auth"}
				r = &c
			case "r11":
				c := *r
				c.Match.Methods = nil
				r = &c
			}
			nv.Routes = append(nv.Routes, r)
		}
		next.VirtualHosts = append(next.VirtualHosts, nv)
	}
	return &next
}

// TestMemoFollowsOmissionFlips: routes going from served to left out and back, through one
// memo, build what builds without a memo make.
func TestMemoFollowsOmissionFlips(t *testing.T) {
	memo := NewMemo()
	memo.verify = true
	cfg := reuseIR(t)
	flipped := flipOmissions(cfg)
	for i, c := range []*ir.Config{cfg, flipped, cfg, flipped, flipOmissions(flipped)} {
		got, err := Build(c, Options{Flavor: FlavorGRPC, Memo: memo})
		if err != nil {
			t.Fatal(err)
		}
		want, err := Build(c, Options{Flavor: FlavorGRPC})
		if err != nil {
			t.Fatal(err)
		}
		equalResources(t, fmt.Sprintf("revision %d", i), got, want)
		_, r00 := got.Omitted["r00"]
		_, r11 := got.Omitted["r11"]
		if r00 == (c == cfg) || r11 != (c == cfg) {
			t.Fatalf("revision %d: omitted %v", i, got.Omitted)
		}
	}
}
