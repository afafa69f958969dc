package extauthz

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/waf"
)

func publicRoute(id string, mod func(*model.Route)) *model.Route {
	f := false
	return route(id, func(r *model.Route) {
		r.RequireAuth = &f
		if mod != nil {
			mod(r)
		}
	})
}

func TestIPRules(t *testing.T) {
	h := newHarness(t, Options{})
	exp := h.clock.Now().Add(time.Hour)
	past := h.clock.Now().Add(-time.Minute)
	snap := &model.Snapshot{Revision: 1,
		Routes: []*model.Route{
			publicRoute("open", nil),
			publicRoute("internal", nil),
			publicRoute("named", func(r *model.Route) { r.Auth = &model.RouteAuth{IPRules: []string{"only-v6"}} }),
		},
		IPRules: []*model.IPRule{
			{ID: "deny-bad", Action: "deny", CIDRs: []string{"203.0.113.0/24", "2001:db8:bad::/48"}},
			{ID: "ban", Action: "deny", CIDRs: []string{"198.51.100.7"}, ExpiresAt: &exp, Source: "waf"},
			{ID: "old-ban", Action: "deny", CIDRs: []string{"198.51.100.8"}, ExpiresAt: &past, Source: "waf"},
			{ID: "office", Action: "allow", CIDRs: []string{"10.0.0.0/8"}, Routes: []string{"internal"}},
			{ID: "only-v6", Action: "allow", CIDRs: []string{"2001:db8:1::/48"}, Routes: []string{"named"}},
		},
	}
	h.apply(snap)
	cases := []struct {
		route, src, xff string
		status          int
		code            string
	}{
		{"open", "8.8.8.8", "", 200, ""},
		{"open", "203.0.113.9", "", 403, ReasonIPDenied},
		{"open", "2001:db8:bad::1", "", 403, ReasonIPDenied},
		{"open", "::ffff:203.0.113.9", "", 403, ReasonIPDenied},
		{"open", "198.51.100.7", "", 403, ReasonIPDenied},
		{"open", "198.51.100.8", "", 200, ""}, // expired ban
		{"internal", "10.20.30.40", "", 200, ""},
		{"internal", "8.8.8.8", "", 403, ReasonIPNotAllowed},
		{"internal", "203.0.113.1", "", 403, ReasonIPDenied},
		{"named", "2001:db8:1::9", "", 200, ""},
		{"named", "10.0.0.1", "", 403, ReasonIPNotAllowed},
		// Without trusted hops x-forwarded-for is ignored.
		{"open", "8.8.8.8", "203.0.113.5", 200, ""},
	}
	for _, c := range cases {
		resp := h.check(envoyReq{routeID: rid(c.route), src: c.src, headers: map[string]string{"x-forwarded-for": c.xff}})
		if httpStatus(resp) != c.status || (c.code != "" && errCode(t, resp) != c.code) {
			t.Errorf("%s from %s: status %d %s, want %d %s", c.route, c.src, httpStatus(resp), resp.GetDeniedResponse().GetBody(), c.status, c.code)
		}
	}
	// The ban expires on the injected clock between snapshots.
	h.clock.Add(2 * time.Hour)
	if resp := h.check(envoyReq{routeID: rid("open"), src: "198.51.100.7"}); httpStatus(resp) != 200 {
		t.Fatal("expired ban still denies")
	}
	// Trusted proxy hops: the client is the entry left of the trusted ones.
	snap.Settings = &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{TrustedProxyHops: 1}}
	snap.Revision = 2
	h.apply(snap)
	resp := h.check(envoyReq{routeID: rid("open"), src: "10.0.0.2", headers: map[string]string{"x-forwarded-for": "1.2.3.4, 203.0.113.5, 10.0.0.1"}})
	if httpStatus(resp) != 403 {
		t.Fatalf("xff client 203.0.113.5 not denied: %d", httpStatus(resp))
	}
	resp = h.check(envoyReq{routeID: rid("open"), src: "10.0.0.2", headers: map[string]string{"x-forwarded-for": "203.0.113.5, 1.2.3.4, 10.0.0.1"}})
	if httpStatus(resp) != 200 {
		t.Fatalf("spoofed left-most xff entry was trusted: %d", httpStatus(resp))
	}
}

func TestClientAddr(t *testing.T) {
	src := netip.MustParseAddr("10.0.0.1")
	for _, c := range []struct {
		xff  string
		hops int
		want string
	}{
		{"1.1.1.1", 0, "10.0.0.1"},
		{"1.1.1.1, 2.2.2.2", 1, "1.1.1.1"},
		{"1.1.1.1,2.2.2.2,3.3.3.3", 2, "1.1.1.1"},
		{"1.1.1.1", 1, "10.0.0.1"}, // too few entries
		{"junk, 2.2.2.2", 1, "10.0.0.1"},
		{"2001:db8::1, 2.2.2.2", 1, "2001:db8::1"},
	} {
		if got := clientAddr(src, c.xff, c.hops).String(); got != c.want {
			t.Errorf("%q hops %d: %s, want %s", c.xff, c.hops, got, c.want)
		}
	}
}

func TestWAFDenyRuleThroughStoreShape(t *testing.T) {
	until := time.Date(2026, 3, 4, 13, 0, 0, 0, time.UTC)
	r, err := WAFDenyRule("::ffff:198.51.100.7", until, "waf: 5 violations", until.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if errs := r.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if r.Source != "waf" || r.Action != "deny" || r.CIDRs[0] != "198.51.100.7" || !r.ExpiresAt.Equal(until) {
		t.Fatalf("%+v", r)
	}
	again, _ := WAFDenyRule("198.51.100.7", until, "x", until)
	if again.ID != r.ID {
		t.Fatal("the same address must map to the same rule id")
	}
	if _, err := WAFDenyRule("not-an-ip", until, "", until); err == nil {
		t.Fatal("bad address accepted")
	}
}

func TestGeoRules(t *testing.T) {
	geo, err := OpenGeoDB(filepath.Join(geoDir(t), "GeoIP2-Country-Test.mmdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geo.Close() })
	for ip, want := range map[string]string{"81.2.69.142": "GB", "89.160.20.112": "SE", "216.160.83.56": "US", "2001:218::1": "JP", "10.0.0.1": ""} {
		if got := geo.Country(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: %q, want %q", ip, got, want)
		}
	}
	h := newHarness(t, Options{Geo: geo})
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{
			publicRoute("eu", nil),
			publicRoute("blocked", func(r *model.Route) {
				r.WAF = &model.WAFSettings{Enabled: boolp(false), GeoblockingEnabled: true, BlockedCountries: []string{"us"}}
			}),
		},
		Policies: []*model.Policy{
			{ID: "eu-only", Routes: []string{"eu"}, AllowCountries: []string{"GB", "SE"}},
			{ID: "no-jp", DenyCountries: []string{"JP"}},
		},
	})
	for _, c := range []struct {
		route, ip string
		status    int
		code      string
	}{
		{"eu", "81.2.69.142", 200, ""},
		{"eu", "89.160.20.112", 200, ""},
		{"eu", "216.160.83.56", 403, ReasonCountryNotAllowed},
		{"eu", "10.0.0.1", 403, ReasonCountryNotAllowed}, // unknown country fails an allow list
		{"eu", "2001:218::5", 403, ReasonCountryDenied},
		{"blocked", "216.160.83.56", 403, ReasonCountryDenied},
		{"blocked", "81.2.69.142", 200, ""},
		{"blocked", "10.0.0.1", 200, ""}, // unknown country passes a deny list
	} {
		resp := h.check(envoyReq{routeID: rid(c.route), src: c.ip})
		if httpStatus(resp) != c.status || (c.code != "" && errCode(t, resp) != c.code) {
			t.Errorf("%s from %s: %d %s", c.route, c.ip, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
}

func boolp(b bool) *bool { return &b }

func TestTenantIsolation(t *testing.T) {
	h := newHarness(t, Options{})
	kAcme, sAcme := newKey(t, "acme-key", func(k *model.APIKey) { k.Tenant = "acme" })
	kOff, sOff := newKey(t, "off-key", func(k *model.APIKey) { k.Tenant = "dormant" })
	kNone, sNone := newKey(t, "no-tenant", nil)
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{
			route("acme-api", func(r *model.Route) { r.Tenant = "acme" }),
			route("shared", func(r *model.Route) { r.Auth = &model.RouteAuth{TenantHeader: "X-Tenant"} }),
			route("plain", nil),
		},
		APIKeys: []*model.APIKey{kAcme, kOff, kNone},
		Tenants: []*model.Tenant{{ID: "acme"}, {ID: "dormant", Disabled: true}},
	})
	key := func(s string, extra ...string) map[string]string {
		m := map[string]string{"x-api-key": s}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	for _, c := range []struct {
		name   string
		r      envoyReq
		status int
		code   string
	}{
		{"own tenant", envoyReq{routeID: rid("acme-api"), headers: key(sAcme)}, 200, ""},
		{"no tenant on a tenant route", envoyReq{routeID: rid("acme-api"), headers: key(sNone)}, 403, ReasonTenantMismatch},
		{"disabled tenant", envoyReq{routeID: rid("plain"), headers: key(sOff)}, 403, ReasonTenantDisabled},
		{"tenant from context_extensions", envoyReq{routeID: rid("plain"), tenant: "acme", headers: key(sNone)}, 403, ReasonTenantMismatch},
		{"tenant header matches", envoyReq{routeID: rid("shared"), headers: key(sAcme, "x-tenant", "acme")}, 200, ""},
		{"tenant header of another tenant", envoyReq{routeID: rid("shared"), headers: key(sAcme, "x-tenant", "globex")}, 403, ReasonTenantHeader},
		{"tenant header missing", envoyReq{routeID: rid("shared"), headers: key(sAcme)}, 403, ReasonTenantHeader},
	} {
		resp := h.check(c.r)
		if httpStatus(resp) != c.status || (c.code != "" && errCode(t, resp) != c.code) {
			t.Errorf("%s: %d %s", c.name, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
}

func TestPolicies(t *testing.T) {
	h := newHarness(t, Options{})
	kAdmin, sAdmin := newKey(t, "adm", func(k *model.APIKey) { k.Scopes = []string{"admin"}; k.UserID = "root" })
	kUser, sUser := newKey(t, "usr", func(k *model.APIKey) { k.Scopes = []string{"read"} })
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{
			route("items", func(r *model.Route) {
				r.Metadata = map[string]string{"tier": "gold"}
				r.Auth = &model.RouteAuth{Policies: []string{"deletes"}}
			}),
			route("other", nil),
		},
		APIKeys: []*model.APIKey{kAdmin, kUser},
		Policies: []*model.Policy{
			{ID: "deletes", Routes: []string{"items"}, Rules: []model.PolicyRule{
				{Expression: `request.method == "DELETE" && "admin" in identity.scopes`, Action: "allow"},
				{Expression: `request.method == "DELETE"`, Action: "deny", Status: 405, Message: "deletes need admin"},
				{Expression: `"debug" in request.query && request.query["debug"] == "1" && route.metadata.tier == "gold"`, Action: "deny"},
				// Evaluation errors (a missing header) make a deny rule deny, never let through.
				{Expression: `request.headers["x-must-exist"] == "nope"`, Action: "deny", Status: 400},
			}},
			{ID: "global-ua", Rules: []model.PolicyRule{
				{Expression: `request.headers["user-agent"].startsWith("sqlmap")`, Action: "deny"},
			}},
			{ID: "off", Disabled: true, Rules: []model.PolicyRule{{Expression: "true", Action: "deny"}}},
		},
	})
	for _, c := range []struct {
		name   string
		r      envoyReq
		status int
	}{
		{"admin delete", envoyReq{routeID: rid("items"), method: "DELETE", headers: map[string]string{"x-api-key": sAdmin}}, 200},
		{"user delete", envoyReq{routeID: rid("items"), method: "DELETE", headers: map[string]string{"x-api-key": sUser}}, 405},
		{"user get", envoyReq{routeID: rid("items"), headers: map[string]string{"x-api-key": sUser, "x-must-exist": "yes"}}, 200},
		{"deny rule that cannot evaluate", envoyReq{routeID: rid("items"), headers: map[string]string{"x-api-key": sUser}}, 400},
		{"debug query", envoyReq{routeID: rid("items"), path: "/items?debug=1", headers: map[string]string{"x-api-key": sUser, "x-must-exist": "yes"}}, 403},
		{"global policy on another route", envoyReq{routeID: rid("other"), headers: map[string]string{"x-api-key": sUser, "user-agent": "sqlmap/1.7"}}, 403},
		{"delete on another route", envoyReq{routeID: rid("other"), method: "DELETE", headers: map[string]string{"x-api-key": sUser}}, 200},
	} {
		resp := h.check(c.r)
		if httpStatus(resp) != c.status {
			t.Errorf("%s: %d %s", c.name, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
		if c.status == 405 && !strings.Contains(resp.GetDeniedResponse().GetBody(), "deletes need admin") {
			t.Errorf("%s: message missing: %s", c.name, resp.GetDeniedResponse().GetBody())
		}
	}
}

func TestValidatePolicy(t *testing.T) {
	bad := &model.Policy{ID: "p", Rules: []model.PolicyRule{
		{Expression: `request.method == "GET"`, Action: "deny"},
		{Expression: `request.method ==`, Action: "deny"},
		{Expression: `request.path + 1`, Action: "deny"},
		{Expression: `"a"`, Action: "deny"},
	}}
	errs := ValidatePolicy(bad, nil)
	fields := map[string]bool{}
	for _, fe := range errs {
		fields[fe.Field] = true
	}
	if len(errs) != 3 || !fields["rules[1].expression"] || !fields["rules[2].expression"] || !fields["rules[3].expression"] {
		t.Fatalf("errors: %v", errs)
	}
	if errs := ValidatePolicy(&model.Policy{ID: "ok", Rules: []model.PolicyRule{{Expression: `"admin" in identity.roles`, Action: "allow"}}}, nil); len(errs) > 0 {
		t.Fatal(errs)
	}
}

func TestDryRun(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{
		route("trial", func(r *model.Route) { r.Auth = &model.RouteAuth{DryRun: true} }),
	}})
	resp := h.check(envoyReq{routeID: rid("trial")})
	if httpStatus(resp) != 200 {
		t.Fatalf("dry run denied: %d", httpStatus(resp))
	}
	if got := counterValue(t, h, "api_gateway_authz_decisions_total", map[string]string{"decision": DecisionDryRun, "reason": ReasonMissingCredentials}); got != 1 {
		t.Fatalf("dry-run decisions counted %v", got)
	}
}

func TestNoRouteIDUsesGlobalDefault(t *testing.T) {
	h := newHarness(t, Options{})
	k, s := newKey(t, "k", nil)
	h.apply(&model.Snapshot{Revision: 1, APIKeys: []*model.APIKey{k}})
	if resp := h.check(envoyReq{}); httpStatus(resp) != 401 {
		t.Fatalf("default without credentials: %d", httpStatus(resp))
	}
	if resp := h.check(envoyReq{headers: map[string]string{"x-api-key": s}}); httpStatus(resp) != 200 {
		t.Fatalf("default with a key: %d", httpStatus(resp))
	}
	if resp := h.check(envoyReq{routeID: rid("")}); httpStatus(resp) != 403 || errCode(t, resp) != ReasonUnknownRoute {
		t.Fatalf("empty route_id sent: %d", httpStatus(resp))
	}
}

func quotaRun(t *testing.T, q QuotaCounter) {
	h := newHarness(t, Options{Quota: q})
	k, s := newKey(t, "metered", func(k *model.APIKey) { k.Quota = &model.KeyQuota{PerDay: 3, PerMonth: 5} })
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k}})
	req := envoyReq{routeID: rid("r"), headers: map[string]string{"x-api-key": s}}
	var got []int
	for i := 0; i < 4; i++ {
		got = append(got, httpStatus(h.check(req)))
	}
	h.clock.Add(24 * time.Hour) // next day: the day quota resets, the month one does not
	for i := 0; i < 3; i++ {
		got = append(got, httpStatus(h.check(req)))
	}
	// Denied requests do not count: day 1 uses 3 of the month's 5, day 2 the other 2.
	want := []int{200, 200, 200, 429, 200, 200, 429}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses %v, want %v", got, want)
		}
	}
}

func TestQuotaMemory(t *testing.T) { quotaRun(t, nil) }

func TestQuotaRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	quotaRun(t, NewRedisQuota(c))
	// The counters carry an expiry.
	keys, err := c.Keys(context.Background(), "agw:quota:*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v %v", keys, err)
	}
	for _, k := range keys {
		if ttl := c.PTTL(context.Background(), k).Val(); ttl <= 0 {
			t.Fatalf("%s has no expiry (%v)", k, ttl)
		}
	}
	// Redis down: fail closed.
	r.Stop()
	h := newHarness(t, Options{Quota: NewRedisQuota(c)})
	k, s := newKey(t, "m2", func(k *model.APIKey) { k.Quota = &model.KeyQuota{PerDay: 3} })
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k}})
	if st := httpStatus(h.check(envoyReq{routeID: rid("r"), headers: map[string]string{"x-api-key": s}})); st != 503 {
		t.Fatalf("quota store down: %d", st)
	}
}

func TestIntrospection(t *testing.T) {
	var calls atomic.Int32
	clock := newClock()
	exp := clock.Now().Add(10 * time.Minute).Unix()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		user, pass, _ := r.BasicAuth()
		if r.Method != http.MethodPost || user != "gw" || pass != "s3cret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		_ = r.ParseForm()
		resp := map[string]any{"active": false}
		if r.PostForm.Get("token") == "opaque-good" {
			resp = map[string]any{"active": true, "sub": "intro-user", "scope": "read write", "tenant_id": "acme",
				"exp": exp, "aud": "api"}
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, Options{Clock: clock.Now, Introspection: &model.Introspection{URL: srv.URL, ClientID: "gw", ClientSecret: "s3cret"}})
	h.clock = clock
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", func(r *model.Route) {
		r.Auth = &model.RouteAuth{Scopes: []string{"write"}}
	})}})
	for i := 0; i < 3; i++ {
		resp := h.check(envoyReq{routeID: rid("r"), headers: bearer("opaque-good")})
		if httpStatus(resp) != 200 || okHeaders(resp)["x-user-id"] != "intro-user" {
			t.Fatalf("status %d %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
		if m := resp.GetDynamicMetadata().GetFields()["auth_method"].GetStringValue(); m != "introspection" {
			t.Fatalf("auth_method %q", m)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("introspection calls %d, want 1 (cached)", calls.Load())
	}
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer("opaque-bad")}); httpStatus(resp) != 401 || errCode(t, resp) != ReasonTokenInactive {
		t.Fatalf("inactive token: %d", httpStatus(resp))
	}
	clock.Add(11 * time.Minute) // past exp: asked again, and the answer is now expired
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer("opaque-good")}); httpStatus(resp) != 401 {
		t.Fatalf("expired introspection result: %d", httpStatus(resp))
	}
	if calls.Load() != 3 {
		t.Fatalf("calls %d, want 3", calls.Load())
	}
	srv.Close()
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer("opaque-other")}); httpStatus(resp) != 503 {
		t.Fatalf("introspection down: %d", httpStatus(resp))
	}
}

func TestWAFIsTheLastChecker(t *testing.T) {
	reg := waf.NewRegistry(waf.RegistryOptions{Logger: quietLogger()})
	h := newHarness(t, Options{WAF: reg})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{
		publicRoute("guarded", func(r *model.Route) { r.WAF = &model.WAFSettings{} }),
		publicRoute("plain", nil),
	}})
	attack := "/guarded?id=1%27%20OR%201%3D1--"
	resp := h.check(envoyReq{routeID: rid("guarded"), path: attack})
	if httpStatus(resp) != 403 || errCode(t, resp) != ReasonWAFBlocked {
		t.Fatalf("sqli on a WAF route: %d %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
	}
	if st := httpStatus(h.check(envoyReq{routeID: rid("guarded"), path: "/guarded?id=42"})); st != 200 {
		t.Fatalf("clean request: %d", st)
	}
	if st := httpStatus(h.check(envoyReq{routeID: rid("plain"), path: attack})); st != 200 {
		t.Fatalf("route without WAF: %d", st)
	}
}

func TestCELVariables(t *testing.T) {
	r := &Request{Method: "POST", Path: "/a/b", RawQuery: "x=1&y=2", Host: "h.example", Scheme: "https", ID: "rq",
		Headers: map[string]string{"user-agent": "ua/1", "x-trace": "t"}}
	d := &Decision{ClientIP: netip.MustParseAddr("81.2.69.142"), Country: "GB",
		Identity: Identity{Method: MethodJWT, UserID: "u1", Tenant: "acme", Roles: []string{"admin"}, Scopes: []string{"read"},
			Claims: map[string]any{"email": "a@b.c", "org": map[string]any{"id": "o1"}}}}
	act := &celActivation{r: r, d: d, route: routeVars("rt", "acme", map[string]string{"tier": "gold"})}
	for expr, want := range map[string]bool{
		`request.method == "POST" && request.path.startsWith("/a")`:            true,
		`request.query.x == "1" && request.query["y"] == "2"`:                  true,
		`"x-trace" in request.headers && has(request.headers.x_nope) == false`: true,
		`request.headers["user-agent"] == "ua/1"`:                              true,
		`request.ip == "81.2.69.142" && request.country == "GB"`:               true,
		`request.host == "h.example" && request.scheme == "https"`:             true,
		`"admin" in identity.roles && identity.scopes.size() == 1`:             true,
		`identity.claims.email == "a@b.c" && identity.claims.org.id == "o1"`:   true,
		`has(identity.claims.phone)`:                                           false,
		`identity.method == "jwt" && identity.user_id == "u1"`:                 true,
		`identity.tenant == route.tenant && route.metadata.tier == "gold"`:     true,
		`request.headers.exists(k, k.startsWith("x-"))`:                        true,
		`request.size() == 9 && "method" in request`:                           true,
	} {
		prg, err := compileRule(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		act.request, act.identity = nil, nil
		out, _, err := prg.Eval(act)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if out.Value() != want {
			t.Errorf("%s = %v, want %v", expr, out.Value(), want)
		}
	}
}
