package translate

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// idsUpTo lists every id of 1..n characters over an alphabet holding each kind of character
// the model accepts in ids and service names (letter, digit, '-', '_', '.'), plus the words
// that name resources on their own.
func idsUpTo(n int) []string {
	alphabet := []string{"a", "0", "-", "_", "."}
	out := []string{"service", "route", "grpc", "http", "api_gateway_grpc", "otel_collector", "10", "01"}
	level := []string{""}
	for i := 0; i < n; i++ {
		var next []string
		for _, p := range level {
			for _, c := range alphabet {
				next = append(next, p+c)
			}
		}
		out = append(out, next...)
		level = next
	}
	return out
}

// Every route cluster and service cluster name, over every short id, is distinct and parses
// back to exactly what made it: no route id can take a service's cluster or another route's.
func TestClusterNamesNeverCollide(t *testing.T) {
	made := map[string]string{}
	claim := func(name, by string) {
		if prev, dup := made[name]; dup {
			t.Fatalf("cluster name %q made by %s and by %s", name, prev, by)
		}
		made[name] = by
	}
	for _, id := range idsUpTo(3) {
		for i := 0; i < 12; i++ {
			name := ClusterName(id, i)
			claim(name, "route "+id)
			kind, gotID, gotI, ok := parseClusterName(name)
			if !ok || kind != "route" || gotID != id || gotI != i {
				t.Fatalf("%q parses to %q %q %d %v", name, kind, gotID, gotI, ok)
			}
		}
		name := ServiceClusterName(id)
		claim(name, "service "+id)
		if kind, gotID, _, ok := parseClusterName(name); !ok || kind != "service" || gotID != id {
			t.Fatalf("%q parses to %q %q %v", name, kind, gotID, ok)
		}
	}
	// The fixed names of the control-plane clusters are none of these.
	for _, fixed := range []string{"api_gateway_grpc", "otel_collector"} {
		if _, _, _, ok := parseClusterName(fixed); ok {
			t.Fatalf("%q parses as a route or service cluster", fixed)
		}
	}
}

// The model refuses every id the names rely on never seeing: the naming and the model's
// id rule must not drift apart.
func TestModelRefusesIDsThatWouldBreakNames(t *testing.T) {
	for _, id := range []string{"a/0", "/", "service/0"} {
		r := &model.Route{ID: id}
		if !hasField(r.Validate(), "id") {
			t.Errorf("route id %q is accepted by the model", id)
		}
		s := &model.Service{Name: id, Host: "10.0.0.1", Port: 80}
		if !hasField(s.Validate(), "name") {
			t.Errorf("service name %q is accepted by the model", id)
		}
	}
}

func hasField(errs model.FieldErrors, field string) bool {
	for _, e := range errs {
		if e.Field == field {
			return true
		}
	}
	return false
}

func clashRoute(id string, targets int) *model.Route {
	r := &model.Route{ID: id, Conditions: []model.Condition{{PathPattern: "/" + strings.ReplaceAll(id, "/", "_") + "/*"}}}
	for i := 0; i < targets; i++ {
		r.Targets = append(r.Targets, model.Target{Host: "10.0.0.1", Port: 8000 + i})
	}
	return r
}

// Route id "service" and service name "0" made the same cluster "service/0" under the old
// naming: the revision failed validation and so did every later one. Now both translate.
func TestRouteServiceAndServiceZeroBothTranslate(t *testing.T) {
	snap := &model.Snapshot{Revision: 2, Settings: &model.Settings{ID: model.SettingsID},
		Routes:   []*model.Route{clashRoute("service", 2), clashRoute("route", 1)},
		Services: []*model.Service{{ID: "s0", Name: "0", Host: "10.0.0.2", Port: 80}, {ID: "s1", Name: "route", Host: "10.0.0.3", Port: 80}}}
	cfg, err := Translate(snap, Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("route errors: %v", cfg.RouteErrors)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the configuration does not validate: %v", err)
	}
	var names []string
	for _, c := range cfg.Clusters {
		names = append(names, c.Name)
	}
	want := "route/route/0 route/service/0 route/service/1 service/0 service/route"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("clusters %q, want %q", got, want)
	}
}

// An object stored around the API's checks (by hand, or by an older replica) whose id holds
// the separator loses its route, with the reason; the others still translate and validate.
func TestRouteIDWithSeparatorIsLeftOutWithReason(t *testing.T) {
	snap := &model.Snapshot{Revision: 3, Settings: &model.Settings{ID: model.SettingsID},
		Routes:   []*model.Route{clashRoute("a", 1), clashRoute("a/0", 1)},
		Services: []*model.Service{{ID: "bad", Name: "x/y", Host: "10.0.0.2", Port: 80}}}
	cfg, err := Translate(snap, Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.RouteErrors["a/0"]; !strings.Contains(e, "'/'") {
		t.Fatalf("route a/0: error %q", e)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0] != "a" || len(cfg.ServiceHosts) != 0 {
		t.Fatalf("routes %v, service hosts %v", cfg.Routes, cfg.ServiceHosts)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A host Envoy would refuse as a domain (a control character) costs its route, not the
// route configuration every route shares.
func TestHostWithControlCharacterIsLeftOut(t *testing.T) {
	bad := clashRoute("bad", 1)
	bad.Hosts = []string{"a\nb.example"}
	snap := &model.Snapshot{Revision: 4, Settings: &model.Settings{ID: model.SettingsID}, Routes: []*model.Route{clashRoute("good", 1), bad}}
	cfg, err := Translate(snap, Options{ControlPlane: "127.0.0.1:18000"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RouteErrors["bad"] == "" || len(cfg.Routes) != 1 {
		t.Fatalf("route errors %v, routes %v", cfg.RouteErrors, cfg.Routes)
	}
}

// A service instance stored without a usable address is left out of its service; the
// service's other instances and the revision still apply.
func TestServiceInstanceWithoutAddressIsLeftOut(t *testing.T) {
	snap := &model.Snapshot{Revision: 5, Settings: &model.Settings{ID: model.SettingsID},
		Services: []*model.Service{{ID: "a", Name: "users", Host: "10.0.0.1", Port: 80}, {ID: "b", Name: "users", Host: "10.0.0.2", Port: 70000}}}
	cfg, err := Translate(snap, Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("one bad instance fails the revision: %v", err)
	}
	if len(cfg.Clusters) != 1 || len(cfg.Clusters[0].Endpoints) != 1 || cfg.Clusters[0].Endpoints[0].Host != "10.0.0.1" {
		t.Fatalf("clusters %+v", cfg.Clusters)
	}
}

// Descriptors of one rate-limit domain are told apart by key and value, not by the two
// joined: key "remote_address" value "x" and key "remote" value "address_x" are different
// descriptors, and both are served.
func TestRateLimitDescriptorsWithUnderscoresDoNotCollide(t *testing.T) {
	limit := &model.DescriptorRateLimit{Unit: "second", RequestsPerUnit: 5}
	snap := &model.Snapshot{Revision: 6, Settings: &model.Settings{ID: model.SettingsID}, RateLimits: []*model.RateLimit{
		{ID: "a", Domain: "edge", Descriptors: []model.RateLimitDescriptor{{Key: "remote_address", Value: "x", RateLimit: limit}}},
		{ID: "b", Domain: "edge", Descriptors: []model.RateLimitDescriptor{{Key: "remote", Value: "address_x", RateLimit: limit}}},
	}}
	domains, errs := RateLimitDomains(snap)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(domains) != 1 || len(domains[0].Descriptors) != 2 {
		t.Fatalf("domains %+v", domains)
	}
}

// parseClusterName (the tests' inverse of the naming) splits a cluster name made by ClusterName or ServiceClusterName back into
// its kind ("route" or "service"), id and target index (routes only); ok is false for any
// other name. That every name parses back to the fields it was made from is what makes the
// naming collision-free.
func parseClusterName(name string) (kind, id string, index int, ok bool) {
	if rest, found := strings.CutPrefix(name, RouteClusterPrefix); found {
		id, num, found := strings.Cut(rest, "/")
		if !found || checkNamePart(id) != nil {
			return "", "", 0, false
		}
		i, err := strconv.Atoi(num)
		if err != nil || i < 0 || strconv.Itoa(i) != num {
			return "", "", 0, false
		}
		return "route", id, i, true
	}
	if rest, found := strings.CutPrefix(name, ServiceClusterPrefix); found && checkNamePart(rest) == nil {
		return "service", rest, 0, true
	}
	return "", "", 0, false
}
