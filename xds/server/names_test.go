package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// clashingWords are ids that are, or make, another object's resource name: kind prefixes,
// listener and route configuration names, the control-plane clusters, and target indexes.
var clashingWords = []string{"service", "route", "grpc", "http", "0", "1", "api_gateway_grpc", "otel_collector", "service.0", "a-0", "_", "a.b"}

// Every name producer of a whole configuration, fed ids chosen to collide under a naive
// scheme (each word is a route id and a service name, and every other one a route host too), gives every
// resource a name of its own: clusters and EDS assignments, listeners, route configurations,
// virtual hosts (per route configuration), routes (per virtual host), for Envoy and gRPC
// clients, plus the rate-limit descriptors and ext_authz route keys derived from ids. Nothing
// is left out and the snapshot is consistent.
func TestResourceNamesNeverCollide(t *testing.T) {
	snap := &model.Snapshot{Revision: 7, Settings: &model.Settings{ID: model.SettingsID}}
	for i, w := range clashingWords {
		r := &model.Route{ID: w, Hosts: []string{w + ".example", "h" + w},
			Conditions: []model.Condition{{PathPattern: fmt.Sprintf("/p%d/*", i)}, {PathPattern: fmt.Sprintf("/q%d", i), Method: "POST"}},
			Targets:    []model.Target{{Host: "10.0.0.1", Port: 8000 + i}, {Service: w}},
			RateLimit:  &model.RouteRateLimit{Limits: []model.RateLimit{{RequestsPerUnit: 5, TimeUnit: model.Duration(time.Second)}}}}
		if i%2 == 0 {
			// A host that is also a service name: one gRPC listener serves both (the route's).
			r.Hosts = append(r.Hosts, w)
		}
		snap.Routes = append(snap.Routes, r)
		snap.Services = append(snap.Services, &model.Service{ID: "svc-" + fmt.Sprint(i), Name: w, Host: fmt.Sprintf("10.0.1.%d", i+1), Port: 80})
	}
	for _, r := range snap.Routes {
		if errs := r.Validate(); len(errs) > 0 {
			t.Fatalf("route %s is not one the API accepts: %v", r.ID, errs)
		}
	}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000", OTLPEndpoint: "otel:4317",
		Now: func() time.Time { return time.Unix(1, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("routes left out: %v", cfg.RouteErrors)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("IR: %v", err)
	}
	// The gRPC flavor leaves out by design routes with a method condition, ext_authz or rate
	// limits: its names are checked on the same routes without them.
	plain := *snap
	plain.Routes = nil
	for _, r := range snap.Routes {
		c := *r
		c.Conditions = append([]model.Condition(nil), r.Conditions...)
		c.Conditions[1].Method = ""
		c.RateLimit, c.RequireAuth = nil, falsePtr()
		plain.Routes = append(plain.Routes, &c)
	}
	cfgGRPC, err := translate.Translate(&plain, translate.Options{ControlPlane: "127.0.0.1:18000", OTLPEndpoint: "otel:4317",
		Now: func() time.Time { return time.Unix(1, 0) }})
	if err != nil || len(cfgGRPC.RouteErrors) > 0 {
		t.Fatalf("%v %v", err, cfgGRPC.RouteErrors)
	}
	// Envoy gets 2 clusters per route, the control plane and the collector; gRPC clients 2
	// per route and 1 per service (they dial services by name).
	wantClusters := map[envoy.Flavor]int{envoy.FlavorEnvoy: 2*len(clashingWords) + 2, envoy.FlavorGRPC: 3 * len(clashingWords)}
	for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		in := cfg
		if fl == envoy.FlavorGRPC {
			in = cfgGRPC
		}
		res, err := envoy.Build(in, envoy.Options{Flavor: fl})
		if err != nil {
			t.Fatalf("flavor %d: %v", fl, err)
		}
		if len(res.RouteErrors) > 0 || len(res.Omitted) > 0 {
			t.Fatalf("flavor %d: routes left out: %v %v", fl, res.RouteErrors, res.Omitted)
		}
		unique := func(what string, names []string) {
			t.Helper()
			seen := map[string]bool{}
			for _, n := range names {
				if seen[n] {
					t.Fatalf("flavor %d: %s %q appears twice", fl, what, n)
				}
				seen[n] = true
			}
		}
		var clusters, eds, listeners, rcs []string
		for _, c := range res.Clusters {
			clusters = append(clusters, c.GetName())
		}
		for _, e := range res.Endpoints {
			eds = append(eds, e.GetClusterName())
		}
		for _, l := range res.Listeners {
			listeners = append(listeners, l.GetName())
		}
		for _, rc := range res.Routes {
			rcs = append(rcs, rc.GetName())
			var vhs []string
			for _, vh := range rc.GetVirtualHosts() {
				vhs = append(vhs, vh.GetName())
				var routes []string
				for _, r := range vh.GetRoutes() {
					routes = append(routes, r.GetName())
				}
				unique("route in virtual host "+vh.GetName(), routes)
			}
			unique("virtual host in "+rc.GetName(), vhs)
		}
		unique("cluster", clusters)
		unique("endpoint assignment", eds)
		unique("listener", listeners)
		unique("route configuration", rcs)
		if len(clusters) != wantClusters[fl] {
			t.Fatalf("flavor %d: %d clusters, want %d: %v", fl, len(clusters), wantClusters[fl], clusters)
		}
	}
	p, err := buildSnapshot(snap, translate.Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return time.Unix(1, 0) }}, nil, nil, nil)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if len(p.st.routeErrors) > 0 {
		t.Fatalf("snapshot left routes out: %v", p.st.routeErrors)
	}

	// Rate limits: one route_id node per route, one policy node per inline limit.
	gen, errs := translate.GeneratedDomain(snap)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	top := map[string]bool{}
	for _, d := range gen.Descriptors {
		k := d.Key + "=" + d.Value
		if top[k] {
			t.Fatalf("rate-limit descriptor %s appears twice", k)
		}
		top[k] = true
		pols := map[string]bool{}
		for _, c := range d.Descriptors {
			if pols[c.Key+"="+c.Value] {
				t.Fatalf("rate-limit descriptor %s → %s=%s appears twice", k, c.Key, c.Value)
			}
			pols[c.Key+"="+c.Value] = true
		}
	}
	if len(top) != len(clashingWords) {
		t.Fatalf("%d route descriptors, want %d", len(top), len(clashingWords))
	}
	// ext_authz finds a route by its id alone (context_extensions route_id): one id, one key.
	keys := map[string]string{}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			k := r.Authz.ContextExtensions["route_id"]
			if prev, ok := keys[k]; ok && prev != r.RouteID {
				t.Fatalf("ext_authz key %q names routes %s and %s", k, prev, r.RouteID)
			}
			keys[k] = r.RouteID
		}
	}
}
