package translate

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

func boolPtr(b bool) *bool { return &b }

func TestSortRoutesMostSpecificFirst(t *testing.T) {
	mk := func(name string, kind ir.PathKind, path string, headers int) *ir.Route {
		r := &ir.Route{Name: name, Match: ir.Match{PathKind: kind, Path: path}}
		for i := 0; i < headers; i++ {
			r.Match.Headers = append(r.Match.Headers, ir.StringMatch{Name: "x", Kind: ir.MatchPresent})
		}
		return r
	}
	rs := []*ir.Route{
		mk("root", ir.PathPrefix, "/", 0),
		mk("api", ir.PathPrefix, "/api/", 0),
		mk("api-canary", ir.PathPrefix, "/api/", 1),
		mk("tmpl", ir.PathRegex, "^/api/[^/]+$", 0),
		mk("exact-b", ir.PathExact, "/b", 0),
		mk("exact-a", ir.PathExact, "/a", 0),
	}
	SortRoutes(rs)
	var got []string
	for _, r := range rs {
		got = append(got, r.Name)
	}
	want := []string{"exact-a", "exact-b", "tmpl", "api-canary", "api", "root"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestNeedsAuthz(t *testing.T) {
	base := func() *model.Route {
		return &model.Route{ID: "r", RequireAuth: boolPtr(false), Conditions: []model.Condition{{PathPattern: "/"}}, Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}
	}
	empty := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID}}
	if NeedsAuthz(base(), empty, time.Time{}) {
		t.Fatal("a public route without rules needs no ext_authz")
	}
	r := base()
	r.RequireAuth = nil
	if !NeedsAuthz(r, empty, time.Time{}) {
		t.Fatal("require_auth defaults to true")
	}
	withIP := &model.Snapshot{Settings: empty.Settings, IPRules: []*model.IPRule{{ID: "x", Action: "deny", CIDRs: []string{"10.0.0.0/8"}, Routes: []string{"other"}}}}
	if NeedsAuthz(base(), withIP, time.Time{}) {
		t.Fatal("an ip rule of another route does not apply")
	}
	withIP.IPRules[0].Routes = nil
	if !NeedsAuthz(base(), withIP, time.Time{}) {
		t.Fatal("a global ip rule applies")
	}
	disabled := &model.Snapshot{Settings: empty.Settings, Policies: []*model.Policy{{ID: "p", Disabled: true}}}
	if NeedsAuthz(base(), disabled, time.Time{}) {
		t.Fatal("a disabled policy does not apply")
	}
	r = base()
	r.WAF = &model.WAFSettings{Enabled: boolPtr(false)}
	globalWAF := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID, WAF: &model.WAFSettings{}}}
	if NeedsAuthz(r, globalWAF, time.Time{}) || !NeedsAuthz(base(), globalWAF, time.Time{}) {
		t.Fatal("a route's waf object replaces the global one")
	}
}

func TestTranslateRouteAndDomains(t *testing.T) {
	snap := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID}, Services: []*model.Service{
		{ID: "u1", Name: "users", Host: "10.0.0.1", Port: 80},
		{ID: "u2", Name: "users", Host: "10.0.0.2", Port: 80, TTL: model.Duration(time.Second), LastHeartbeat: time.Unix(0, 0)},
	}}
	r := &model.Route{ID: "r", Tenant: "acme", Conditions: []model.Condition{{PathPattern: "/a"}, {PathPattern: "/b/*"}},
		Targets: []model.Target{{Service: "users", Weight: intPtr(3)}, {Host: "api.example.com", Port: 443, TLS: true}}}
	routes, clusters, err := TranslateRoute(r, snap, time.Unix(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0].Name != "r" || routes[1].Name != "r/1" || routes[0].Authz.ContextExtensions["tenant"] != "acme" {
		t.Fatalf("routes %+v", routes)
	}
	if len(clusters) != 2 || clusters[0].Discovery != ir.DiscoveryEDS || len(clusters[0].Endpoints) != 1 ||
		clusters[1].Discovery != ir.DiscoveryDNS || clusters[1].SNI != "api.example.com" {
		t.Fatalf("clusters %+v %+v (the expired instance must be left out)", clusters[0], clusters[1])
	}
	if routes[0].Backends[0].Weight != 3 || routes[0].Backends[1].Weight != 1 {
		t.Fatalf("backends %+v", routes[0].Backends)
	}
	if got := Domains("api.test"); !reflect.DeepEqual(got, []string{"api.test", "api.test:*"}) {
		t.Fatalf("domains %v", got)
	}
	if got := Domains("*.test"); !reflect.DeepEqual(got, []string{"*.test"}) {
		t.Fatalf("domains %v", got)
	}
}

func intPtr(n int) *int { return &n }

// Hosts whose domains collide ("a.test:*" is also a domain of "a.test") share one virtual
// host; a host Envoy would refuse leaves only its route out.
func TestHostsMergeAndBadWildcards(t *testing.T) {
	mk := func(id string, hosts ...string) *model.Route {
		return &model.Route{ID: id, Hosts: hosts, RequireAuth: boolPtr(false), Conditions: []model.Condition{{PathPattern: "/" + id}},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}
	}
	snap := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID},
		Routes: []*model.Route{mk("a", "a.test"), mk("b", "a.test:*"), mk("c", "x*y.test"), mk("d", "a.test", "A.TEST")}}
	cfg, err := Translate(snap, Options{ControlPlane: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.VirtualHosts) != 1 || len(cfg.VirtualHosts[0].Routes) != 3 {
		t.Fatalf("virtual hosts %+v", cfg.VirtualHosts)
	}
	if cfg.RouteErrors["c"] == "" || len(cfg.RouteErrors) != 1 {
		t.Fatalf("route errors %v", cfg.RouteErrors)
	}
}

// Public routes skip ext_authz only when nothing in ext_authz would decide about them, and
// then strip the identity headers a client could forge.
func TestPublicRoutesAuthzAndIdentityHeaders(t *testing.T) {
	no := false
	base := func() *model.Route {
		return &model.Route{ID: "pub", RequireAuth: &no, Conditions: []model.Condition{{PathPattern: "/p/*"}},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}
	}
	snap := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID}}
	if NeedsAuthz(base(), snap, time.Time{}) {
		t.Fatal("a plain public route needs no ext_authz")
	}
	for name, mut := range map[string]func(r *model.Route){
		"tenant":        func(r *model.Route) { r.Tenant = "acme" },
		"tenant header": func(r *model.Route) { r.Auth = &model.RouteAuth{TenantHeader: "x-tenant"} },
		"geoblocking": func(r *model.Route) {
			r.WAF = &model.WAFSettings{GeoblockingEnabled: true, BlockedCountries: []string{"GB"}}
		},
		"policy ref": func(r *model.Route) { r.Auth = &model.RouteAuth{Policies: []string{"p"}} },
	} {
		r := base()
		mut(r)
		if !NeedsAuthz(r, snap, time.Time{}) {
			t.Errorf("%s: ext_authz must run", name)
		}
	}
	r := base()
	r.Auth = &model.RouteAuth{ClaimsToHeaders: map[string]string{"email": "X-Email"}}
	snap.Settings.Auth = &model.AuthSettings{IdentityHeaders: map[string]string{"user_id": "X-Principal", "scopes": "-"}}
	got := IdentityHeaders(r, snap)
	want := []string{"x-api-key-id", "x-email", "x-principal", "x-tenant-id"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("identity headers %v, want %v", got, want)
	}
}

// ext_authz skips an IP rule that has expired (a WAF ban of yesterday), so translation does
// not turn ext_authz on for a public route because of one; a ban still in force does.
func TestExpiredBanDoesNotTurnAuthzOn(t *testing.T) {
	no := false
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	yesterday, tomorrow := now.Add(-24*time.Hour), now.Add(24*time.Hour)
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID},
		Routes: []*model.Route{{ID: "pub", RequireAuth: &no, Conditions: []model.Condition{{PathPattern: "/p/*"}},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}},
		IPRules: []*model.IPRule{{ID: "waf-ban", Action: "deny", CIDRs: []string{"198.51.100.7/32"}, ExpiresAt: &yesterday}}}
	authzOn := func() bool {
		cfg, err := Translate(snap, Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		for _, vh := range cfg.VirtualHosts {
			for _, r := range vh.Routes {
				if r.RouteID == "pub" {
					return r.Authz.Enabled
				}
			}
		}
		t.Fatalf("route pub not served: %v", cfg.RouteErrors)
		return false
	}
	if authzOn() {
		t.Fatal("a ban that expired yesterday turns ext_authz on for a public route")
	}
	snap.IPRules[0].ExpiresAt = &tomorrow
	if !authzOn() {
		t.Fatal("a ban in force does not turn ext_authz on")
	}
}

// The identity headers ext_authz sets and the ones the translator strips from clients'
// requests are read from the settings by one function: a renamed header written with spaces
// or capitals is stripped under the very name ext_authz sets, so a client cannot send its own.
func TestIdentityHeadersReadOneWay(t *testing.T) {
	snap := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{
		IdentityHeaders: map[string]string{"user_id": " X-Principal ", "scopes": "-"}}}}
	got := IdentityHeaders(&model.Route{ID: "r"}, snap)
	want := []string{"x-api-key-id", "x-principal", "x-tenant-id"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("stripped %q, want %q", got, want)
	}
	names := snap.Settings.Auth.IdentityHeaderNames()
	if names["user_id"] != "x-principal" || names["scopes"] != "" {
		t.Fatalf("ext_authz's names %v", names)
	}
	for _, bad := range []string{"x principal", ":path", "x-a\r\nb"} {
		s := model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{IdentityHeaders: map[string]string{"user_id": bad}}}
		if len(s.Validate()) == 0 {
			t.Errorf("identity header %q accepted", bad)
		}
	}
}
