package extauthz

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// The model is read once (translate) and every consumer compiles that reading: these tests
// pin the places where ext_authz and the Envoy configuration used to read it apart.

var readingsNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func readingsTranslate(t *testing.T, snap *model.Snapshot) *ir.Config {
	t.Helper()
	if snap.Settings == nil {
		snap.Settings = &model.Settings{ID: model.SettingsID}
	}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return readingsNow }})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func readingsTables(t *testing.T, cfg *ir.Config, snap *model.Snapshot) *tables {
	t.Helper()
	e, err := New(Options{Logger: quietLogger(), Clock: func() time.Time { return readingsNow }})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.buildIR(cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	return res.t
}

func envoyRoute(t *testing.T, cfg *ir.Config, id string) *ir.Route {
	t.Helper()
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.Name == id {
				return r
			}
		}
	}
	t.Fatalf("route %s not translated: %v", id, cfg.RouteErrors)
	return nil
}

// An expired ban (yesterday's WAF ban, global or naming a route) changes nothing: not the
// Envoy configuration (ext_authz stays off for a public route), not ext_authz's tables.
func TestExpiredBanChangesNoRoute(t *testing.T) {
	model0 := func() *model.Snapshot {
		return &model.Snapshot{Revision: 5, Routes: []*model.Route{
			route("pub", func(r *model.Route) { f := false; r.RequireAuth = &f }),
			route("priv", nil),
		}}
	}
	yesterday := readingsNow.Add(-24 * time.Hour)
	banned := model0()
	banned.IPRules = []*model.IPRule{
		{ID: "waf-old", Action: "deny", CIDRs: []string{"198.51.100.7"}, ExpiresAt: &yesterday, Source: "waf"},
		{ID: "old-pub", Action: "deny", CIDRs: []string{"203.0.113.0/24"}, ExpiresAt: &yesterday, Routes: []string{"pub"}},
	}
	clean := model0()
	a, b := readingsTranslate(t, clean), readingsTranslate(t, banned)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("an expired ban changed the IR")
	}
	if envoyRoute(t, b, "pub").Authz.Enabled {
		t.Fatal("an expired ban turned ext_authz on for a public route")
	}
	if ta, tb := dumpTables(readingsTables(t, a, clean)), dumpTables(readingsTables(t, b, banned)); !reflect.DeepEqual(ta, tb) {
		t.Fatalf("an expired ban changed ext_authz's tables:\n%+v\n%+v", ta, tb)
	}
	// The same ban a day later is in force: both readings see it.
	tomorrow := readingsNow.Add(24 * time.Hour)
	banned.IPRules[0].ExpiresAt = &tomorrow
	c := readingsTranslate(t, banned)
	if !envoyRoute(t, c, "pub").Authz.Enabled {
		t.Fatal("a ban in force must turn ext_authz on for a public route")
	}
	if g := readingsTables(t, c, banned).def.ip.global; g == nil || len(g.deny) != 1 || len(g.deny[0].addrs) != 1 {
		t.Fatal("ext_authz does not hold the ban in force")
	}
}

// The identity header names come from one reading of settings.auth.identity_headers: the
// names ext_authz sets on an allow are the names the Envoy routes without ext_authz strip.
func TestIdentityHeadersOneReading(t *testing.T) {
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{
		IdentityHeaders: map[string]string{"user_id": "  X-Who  ", "scopes": "-"}}},
		Routes: []*model.Route{route("pub", func(r *model.Route) { f := false; r.RequireAuth = &f })}}
	cfg := readingsTranslate(t, snap)
	tb := readingsTables(t, cfg, snap)
	set := []string{tb.hdrUser, tb.hdrTenant, tb.hdrKey, tb.hdrScopes}
	if tb.hdrUser != "x-who" || tb.hdrScopes != "" {
		t.Fatalf("ext_authz sets %q", set)
	}
	var on []string
	for _, h := range set {
		if h != "" {
			on = append(on, h)
		}
	}
	slices.Sort(on)
	if strip := envoyRoute(t, cfg, "pub").RequestHeaders.Remove; !slices.Equal(strip, on) {
		t.Fatalf("the public route strips %q, ext_authz sets %q", strip, on)
	}
}

// The WAF in force on a route is resolved once: Envoy buffers the body for ext_authz exactly
// on the routes whose ext_authz settings carry a WAF, up to that WAF's body size; the geo
// lists ext_authz enforces hold that WAF's geoblocking.
func TestEffectiveWAFOneReading(t *testing.T) {
	on, off := true, false
	global := &model.WAFSettings{MaxRequestBodySize: 4096, GeoblockingEnabled: true, BlockedCountries: []string{"kp"}}
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID, WAF: global},
		Routes: []*model.Route{
			route("inherits", nil),
			route("own", func(r *model.Route) { r.WAF = &model.WAFSettings{Enabled: &on, MaxRequestBodySize: 1024} }),
			route("own-off", func(r *model.Route) { r.WAF = &model.WAFSettings{Enabled: &off} }),
			route("own-geo-only", func(r *model.Route) {
				r.WAF = &model.WAFSettings{Enabled: &off, GeoblockingEnabled: true, BlockedCountries: []string{"ir"}}
			}),
		}}
	cfg := readingsTranslate(t, snap)
	tb := readingsTables(t, cfg, snap)
	want := map[string]struct {
		body uint32
		geo  []string
	}{"inherits": {4096, []string{"KP"}}, "own": {1024, nil}, "own-off": {0, nil}, "own-geo-only": {0, []string{"IR"}}}
	byID := map[string]*ir.RouteAuthz{}
	for _, ra := range cfg.Authz.Routes {
		byID[ra.RouteID] = ra
	}
	for id, w := range want {
		er, ra := envoyRoute(t, cfg, id), byID[id]
		if er.Authz.WithBody != (ra.WAF != nil) || er.Authz.MaxBodyBytes != w.body {
			t.Errorf("%s: Envoy buffers %t/%d, ext_authz WAF %+v", id, er.Authz.WithBody, er.Authz.MaxBodyBytes, ra.WAF)
		}
		if ra.WAF != nil && uint32(ra.WAF.MaxRequestBodySize) != w.body {
			t.Errorf("%s: ext_authz's WAF reads %d bytes, Envoy buffers %d", id, ra.WAF.MaxRequestBodySize, w.body)
		}
		if got := keys(tb.routes[id].geo.deny); !slices.Equal(got, w.geo) {
			t.Errorf("%s: ext_authz denies countries %v, want %v", id, got, w.geo)
		}
	}
}

// Every field of a route's WAF settings reaches the waf package through the IR, but those
// the IR resolves elsewhere (enabled: whether there is a WAF; geoblocking: the geo lists):
// a field added to model.WAFSettings and not to ir.WAF fails here.
func TestWAFSettingsCrossTheIR(t *testing.T) {
	on := true
	w := &model.WAFSettings{Enabled: &on, Mode: model.WAFModeDetect, ParanoiaLevel: 2, AnomalyThreshold: 7,
		MaxRequestBodySize: 1 << 16, CheckTimeout: model.Duration(3 * time.Second), MaxHeaderSize: 1 << 14,
		ExcludeRules: []int{920350}, CustomRules: `SecRule ARGS "@contains x" "id:9001,phase:2,deny"`,
		CustomRulesAfterCRS: `SecRuleUpdateTargetById 942100 "!ARGS:q"`, BlockMaliciousIPs: true, MaliciousIPThreshold: 3,
		MaliciousIPWindow: model.Duration(time.Minute), MaliciousIPBanDuration: model.Duration(time.Hour),
		GeoblockingEnabled: true, BlockedCountries: []string{"kp"}}
	v := reflect.ValueOf(w).Elem()
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).IsZero() {
			t.Fatalf("set %s in this test: every field must cross the IR", v.Type().Field(i).Name)
		}
	}
	snap := &model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", func(r *model.Route) { r.WAF = w })}}
	cfg := readingsTranslate(t, snap)
	ra := cfg.Authz.Routes[0]
	if ra.WAF == nil || !ra.OwnWAF {
		t.Fatalf("no own WAF in the IR: %+v", ra)
	}
	got := wafSettings(ra.WAF)
	want := *w
	want.GeoblockingEnabled, want.BlockedCountries = false, nil // the geo lists hold them
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("WAF settings changed crossing the IR:\n got %+v\nwant %+v", *got, want)
	}
	if !slices.Equal(ra.GeoDeny, []string{"KP"}) {
		t.Fatalf("geoblocking: %v", ra.GeoDeny)
	}
}

// TestUntranslatableRouteFailsClosedAlone: a route that stops translating (here a query
// match Envoy cannot express) leaves the IR, so ext_authz has no entry for it: a request
// Envoy still sends with its id (an older route configuration) is denied as an unknown
// route, even though the route was public, and no other route loses its entry.
func TestUntranslatableRouteFailsClosedAlone(t *testing.T) {
	h := newHarness(t, Options{})
	f, no := false, false
	public := func(r *model.Route) { r.RequireAuth = &f }
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("bad", public), route("kept", public)}})
	for _, id := range []string{"bad", "kept"} {
		if got := httpStatus(h.check(envoyReq{routeID: rid(id)})); got != 200 {
			t.Fatalf("revision 1, route %s: %d", id, got)
		}
	}
	h.apply(&model.Snapshot{Revision: 2, Routes: []*model.Route{route("bad", func(r *model.Route) {
		public(r)
		r.Conditions[0].Query = []model.QueryMatch{{Name: "debug", Present: &no}}
	}), route("kept", public)}})
	resp := h.check(envoyReq{routeID: rid("bad")})
	if httpStatus(resp) != 403 || errCode(t, resp) != ReasonUnknownRoute {
		t.Fatalf("the route that no longer translates: %d", httpStatus(resp))
	}
	if got := httpStatus(h.check(envoyReq{routeID: rid("kept")})); got != 200 {
		t.Fatalf("the other route: %d", got)
	}
}
