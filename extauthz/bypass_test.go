package extauthz

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/api-gateway/api-gateway/model"
)

// Regression tests for bypasses found in the adversarial review. Each fails without its fix.

// A claim copied to a header (identity or claims_to_headers) must never carry CR/LF/NUL to
// the upstream: the request is refused instead, also on a dry-run route.
func TestIdentityHeaderInjectionIsDenied(t *testing.T) {
	h := newHarness(t, Options{})
	k := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k)
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL})
	snap.Routes = append(snap.Routes,
		route("mail", func(r *model.Route) {
			r.Auth = &model.RouteAuth{ClaimsToHeaders: map[string]string{"email": "x-user-email"}}
		}),
		route("trial", func(r *model.Route) { r.Auth = &model.RouteAuth{DryRun: true} }))
	h.apply(snap)
	tok := func(sub, email string) string {
		return k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": sub, "email": email, "exp": h.clock.Now().Add(time.Hour).Unix()})
	}
	for _, c := range []struct {
		name, route, sub, email string
	}{
		{"CRLF in sub", "r", "alice\r\nx-admin: true", "a@example.com"},
		{"LF in sub", "r", "alice\nx-admin: true", "a@example.com"},
		{"NUL in sub", "r", "alice\x00", "a@example.com"},
		{"CRLF in a claim copied to a header", "mail", "alice", "a@example.com\r\nx-user-id: root"},
		{"CRLF in sub on a dry-run route", "trial", "alice\r\nx-admin: true", "a@example.com"},
	} {
		resp := h.check(envoyReq{routeID: rid(c.route), headers: bearer(tok(c.sub, c.email))})
		if httpStatus(resp) != 401 || errCode(t, resp) != ReasonInvalidIdentity {
			t.Errorf("%s: status %d, headers %q", c.name, httpStatus(resp), okHeaders(resp))
		}
	}
	// A tab is a legal header value character; clean values still pass.
	resp := h.check(envoyReq{routeID: rid("mail"), headers: bearer(tok("alice\tsmith", "a@example.com"))})
	if httpStatus(resp) != 200 || okHeaders(resp)["x-user-email"] != "a@example.com" {
		t.Fatalf("clean token: %d %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
	}
}

// IPv4-mapped IPv6 rules denote the IPv4 addresses they map, and an IPv6 zone id never
// takes an address out of a deny rule.
func TestIPRulesMappedAndZonedAddresses(t *testing.T) {
	h := newHarness(t, Options{})
	kOffice, sOffice := newKey(t, "office", func(k *model.APIKey) {
		k.Restrictions = &model.KeyRestrictions{AllowedIPs: []string{"::ffff:192.168.1.0/120"}}
	})
	h.apply(&model.Snapshot{Revision: 1,
		Routes:  []*model.Route{publicRoute("pub", nil), route("keyed", nil)},
		APIKeys: []*model.APIKey{kOffice},
		IPRules: []*model.IPRule{
			{ID: "mapped-net", Action: "deny", CIDRs: []string{"::ffff:203.0.113.0/120"}},
			{ID: "mapped-host", Action: "deny", CIDRs: []string{"::ffff:198.51.100.9/128"}},
			{ID: "link-local", Action: "deny", CIDRs: []string{"fe80::/10", "2001:db8:bad::1"}},
		},
		Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{TrustedProxyHops: 1}},
	})
	for _, c := range []struct {
		name   string
		r      envoyReq
		status int
	}{
		{"IPv4 client in a mapped deny prefix", envoyReq{routeID: rid("pub"), src: "203.0.113.7"}, 403},
		{"mapped client in a mapped deny prefix", envoyReq{routeID: rid("pub"), src: "::ffff:203.0.113.7"}, 403},
		{"IPv4 client, mapped /128 deny", envoyReq{routeID: rid("pub"), src: "198.51.100.9"}, 403},
		{"zoned source in a deny prefix", envoyReq{routeID: rid("pub"), src: "fe80::1%eth0"}, 403},
		{"zoned source, single deny address", envoyReq{routeID: rid("pub"), src: "2001:db8:bad::1%1"}, 403},
		{"zoned x-forwarded-for client", envoyReq{routeID: rid("pub"), src: "10.0.0.1",
			headers: map[string]string{"x-forwarded-for": "fe80::2%eth0, 10.0.0.1"}}, 403},
		{"other client", envoyReq{routeID: rid("pub"), src: "203.0.114.7"}, 200},
		{"key allowed from a mapped prefix", envoyReq{routeID: rid("keyed"), src: "192.168.1.5",
			headers: map[string]string{"x-api-key": sOffice}}, 200},
		{"key outside its mapped prefix", envoyReq{routeID: rid("keyed"), src: "192.168.2.5",
			headers: map[string]string{"x-api-key": sOffice}}, 403},
	} {
		if got := httpStatus(h.check(c.r)); got != c.status {
			t.Errorf("%s: status %d, want %d", c.name, got, c.status)
		}
	}
}

// A cached verification is only reused under the issuer settings it was made with:
// tightening audiences or algorithms, or changing the claim mapping, applies at once.
func TestTokenCacheHonoursIssuerSettingsChanges(t *testing.T) {
	h := newHarness(t, Options{})
	k := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k)
	base := model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}
	h.apply(jwtSnapshot(1, base))
	tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u1", "aud": "other", "org": "globex",
		"exp": h.clock.Now().Add(time.Hour).Unix()})
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)}); httpStatus(resp) != 200 {
		t.Fatalf("first check: %d", httpStatus(resp))
	}
	aud := base
	aud.Audiences = []string{"api"}
	h.apply(jwtSnapshot(2, aud))
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)}); httpStatus(resp) != 401 {
		t.Errorf("audience added: cached token still accepted (%d)", httpStatus(resp))
	}
	h.apply(jwtSnapshot(3, base))
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)}); httpStatus(resp) != 200 {
		t.Fatalf("audience removed again: %d", httpStatus(resp))
	}
	algs := base
	algs.Algorithms = []string{"ES256"}
	h.apply(jwtSnapshot(4, algs))
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)}); httpStatus(resp) != 401 {
		t.Errorf("RS256 no longer accepted: cached token still accepted (%d)", httpStatus(resp))
	}
	h.apply(jwtSnapshot(5, base))
	h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)})
	claim := base
	claim.TenantClaim = "org"
	h.apply(jwtSnapshot(6, claim))
	resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)})
	if got := resp.GetDynamicMetadata().GetFields()["tenant_id"].GetStringValue(); got != "globex" {
		t.Errorf("tenant_claim changed: tenant %q from a stale cached identity", got)
	}
}

// JWS "crit" extensions are not understood, so a token naming one is refused (RFC 7515).
func TestJWTCritHeaderRejected(t *testing.T) {
	h := newHarness(t, Options{})
	k := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k)
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	tk := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()})
	tk.Header["kid"], tk.Header["crit"], tk.Header["exp-ext"] = "k1", []string{"exp-ext"}, true
	s, err := tk.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(s)}); httpStatus(resp) != 401 {
		t.Fatalf("token with crit: status %d", httpStatus(resp))
	}
}

// A deny rule over caller-controlled input cannot burn unbounded CPU: evaluation stops at
// the cost limit, and a deny rule that fails denies.
func TestPolicyCostIsBounded(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{publicRoute("pub", nil)},
		Policies: []*model.Policy{{ID: "hostile", Rules: []model.PolicyRule{{Action: "deny",
			Expression: `request.headers.exists(a, request.headers.exists(b, request.headers.exists(c, request.headers.exists(d, a + b + c + d == "never"))))`}}}},
	})
	hdrs := map[string]string{}
	for i := 0; i < 24; i++ {
		hdrs[fmt.Sprintf("x-h%02d", i)] = "v"
	}
	start := time.Now()
	resp := h.check(envoyReq{routeID: rid("pub"), headers: hdrs})
	if httpStatus(resp) != 403 || errCode(t, resp) != ReasonPolicyDenied {
		t.Fatalf("hostile rule: status %d (took %v)", httpStatus(resp), time.Since(start))
	}
	// A cheap rule on the same inputs still evaluates normally.
	h.apply(&model.Snapshot{Revision: 2,
		Routes: []*model.Route{publicRoute("pub", nil)},
		Policies: []*model.Policy{{ID: "cheap", Rules: []model.PolicyRule{{Action: "deny",
			Expression: `request.headers.exists(a, a == "x-evil")`}}}},
	})
	if got := httpStatus(h.check(envoyReq{routeID: rid("pub"), headers: hdrs})); got != 200 {
		t.Fatalf("cheap rule: %d", got)
	}
}

// A dyn-typed deny rule that yields a non-bool denies (an error never lets through).
func TestPolicyNonBoolResultDenies(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{publicRoute("pub", nil)},
		Policies: []*model.Policy{{ID: "flag", Rules: []model.PolicyRule{
			{Action: "deny", Expression: `request.headers["x-blocked"]`},
		}}},
	})
	if got := httpStatus(h.check(envoyReq{routeID: rid("pub"), headers: map[string]string{"x-blocked": "yes"}})); got != 403 {
		t.Fatalf("non-bool deny rule: status %d", got)
	}
}

// A rule that does not compile denies where it stands: a later allow rule of the same
// policy cannot let the request past it.
func TestBrokenPolicyRuleDeniesInPlace(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{publicRoute("pub", nil)},
		Policies: []*model.Policy{{ID: "p", Rules: []model.PolicyRule{
			{Action: "deny", Expression: `request.path.startsWith("/admin") &&`},
			{Action: "allow", Expression: `true`},
		}}},
	})
	if got := httpStatus(h.check(envoyReq{routeID: rid("pub"), path: "/admin"})); got != 500 {
		t.Fatalf("broken deny rule before an allow rule: status %d", got)
	}
}

// A time window whose clock does not parse never matches, whatever days it lists.
func TestTimeWindowWithBadClockNeverMatches(t *testing.T) {
	h := newHarness(t, Options{})
	k, s := newKey(t, "k", func(k *model.APIKey) {
		k.Restrictions = &model.KeyRestrictions{AllowedTimeWindows: []model.TimeWindow{
			{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Start: "9am", End: "17:00"}}}
	})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k}})
	resp := h.check(envoyReq{routeID: rid("r"), headers: map[string]string{"x-api-key": s}})
	if httpStatus(resp) != 403 || errCode(t, resp) != ReasonKeyOutsideWindow {
		t.Fatalf("bad window: status %d", httpStatus(resp))
	}
}

// Two different API keys in one request (x-api-key and Authorization: ApiKey) are refused:
// the gateway and the upstream could each read a different one.
func TestConflictingAPIKeysRefused(t *testing.T) {
	h := newHarness(t, Options{})
	ka, sa := newKey(t, "a", func(k *model.APIKey) { k.UserID = "alice" })
	kb, sb := newKey(t, "b", func(k *model.APIKey) { k.UserID = "bob" })
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil), publicRoute("pub", nil)},
		APIKeys: []*model.APIKey{ka, kb}})
	for _, c := range []struct {
		name   string
		hdrs   map[string]string
		status int
	}{
		{"two different keys", map[string]string{"x-api-key": sa, "authorization": "ApiKey " + sb}, 401},
		{"the same key twice", map[string]string{"x-api-key": sa, "authorization": "ApiKey " + sa}, 200},
		{"authorization only", map[string]string{"authorization": "apikey " + sb}, 200},
	} {
		resp := h.check(envoyReq{routeID: rid("r"), headers: c.hdrs})
		if httpStatus(resp) != c.status {
			t.Errorf("%s: status %d", c.name, httpStatus(resp))
		}
		if c.status == 401 && strings.Contains(resp.GetDeniedResponse().GetBody(), "alice") {
			t.Errorf("%s: deny body names a key owner", c.name)
		}
	}
	// A whitespace-only x-api-key is a key that was sent, not "no credential".
	if got := httpStatus(h.check(envoyReq{routeID: rid("pub"), headers: map[string]string{"x-api-key": "  "}})); got != 401 {
		t.Fatalf("blank x-api-key on a public route: %d", got)
	}
}

// fail_open lets a request through without an identity when the JWKS is down, but the
// route's own tenant rules still hold: a disabled tenant's route stays closed.
func TestFailOpenStillEnforcesRouteTenant(t *testing.T) {
	h := newHarness(t, Options{})
	k := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k)
	srv.setDown(true)
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL})
	snap.Routes = append(snap.Routes,
		route("dormant-api", func(r *model.Route) { r.Tenant = "dormant"; r.Auth = &model.RouteAuth{FailOpen: true} }),
		route("hdr", func(r *model.Route) {
			r.Tenant = "acme"
			r.Auth = &model.RouteAuth{FailOpen: true, TenantHeader: "x-tenant"}
		}))
	snap.Tenants = []*model.Tenant{{ID: "dormant", Disabled: true}, {ID: "acme"}}
	h.apply(snap)
	tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "tenant_id": "dormant", "exp": h.clock.Now().Add(time.Hour).Unix()})
	resp := h.check(envoyReq{routeID: rid("dormant-api"), headers: bearer(tok)})
	if httpStatus(resp) != 403 || errCode(t, resp) != ReasonTenantDisabled {
		t.Fatalf("fail open on a disabled tenant's route: status %d", httpStatus(resp))
	}
	hd := bearer(tok)
	hd["x-tenant"] = "globex"
	if got := httpStatus(h.check(envoyReq{routeID: rid("hdr"), headers: hd})); got != 403 {
		t.Fatalf("fail open with another tenant's header: status %d", got)
	}
	hd["x-tenant"] = "acme"
	if got := httpStatus(h.check(envoyReq{routeID: rid("hdr"), headers: hd})); got != 200 {
		t.Fatalf("fail open with the route's tenant header: status %d", got)
	}
}

// Guards for behaviour the review verified (they pass before and after; they pin it).

// A public route allows without a credential, but every identity header the upstream trusts
// is removed, and claims_to_headers targets too: a client can never assert its own identity.
func TestPublicRouteStripsClientIdentityHeaders(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{publicRoute("pub", func(r *model.Route) {
		r.Auth = &model.RouteAuth{ClaimsToHeaders: map[string]string{"email": "x-user-email"}}
	})}})
	resp := h.check(envoyReq{routeID: rid("pub"), headers: map[string]string{"x-user-id": "root", "x-tenant-id": "acme",
		"x-api-key-id": "k", "x-auth-scopes": "admin", "x-user-email": "ceo@example.com"}})
	if httpStatus(resp) != 200 || len(okHeaders(resp)) != 0 {
		t.Fatalf("status %d, headers set %v", httpStatus(resp), okHeaders(resp))
	}
	removed := map[string]bool{}
	for _, n := range resp.GetOkResponse().GetHeadersToRemove() {
		removed[n] = true
	}
	for _, n := range []string{"x-user-id", "x-tenant-id", "x-api-key-id", "x-auth-scopes", "x-user-email"} {
		if !removed[n] {
			t.Errorf("%s not removed (removed: %v)", n, removed)
		}
	}
	if md := resp.GetDynamicMetadata().GetFields(); md["auth_method"].GetStringValue() != MethodNone || md["user_id"] != nil {
		t.Fatalf("metadata %v", md)
	}
}

// A route deleted between snapshots (Envoy may still send its id) is an unknown route.
func TestRouteDeletedBetweenSnapshotsIsDenied(t *testing.T) {
	h := newHarness(t, Options{})
	k, s := newKey(t, "k", nil)
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("gone", nil), route("kept", nil)}, APIKeys: []*model.APIKey{k}})
	if got := httpStatus(h.check(envoyReq{routeID: rid("gone"), headers: map[string]string{"x-api-key": s}})); got != 200 {
		t.Fatalf("before delete: %d", got)
	}
	h.apply(&model.Snapshot{Revision: 2, Routes: []*model.Route{route("kept", nil)}, APIKeys: []*model.APIKey{k}})
	resp := h.check(envoyReq{routeID: rid("gone"), headers: map[string]string{"x-api-key": s}})
	if httpStatus(resp) != 403 || errCode(t, resp) != ReasonUnknownRoute {
		t.Fatalf("after delete: %d", httpStatus(resp))
	}
}

// A dry-run allow is never remembered as an allow: the same credential on a strict route,
// or on the dry-run route once dry_run is off, is decided afresh.
func TestDryRunNeverLeaksIntoRealAllow(t *testing.T) {
	h := newHarness(t, Options{})
	k, s := newKey(t, "k", func(k *model.APIKey) { k.Scopes = []string{"read"} })
	snap := func(rev uint64, dry bool) *model.Snapshot {
		return &model.Snapshot{Revision: rev, APIKeys: []*model.APIKey{k}, Routes: []*model.Route{
			route("trial", func(r *model.Route) { r.Auth = &model.RouteAuth{DryRun: dry, Scopes: []string{"admin"}} }),
			route("strict", func(r *model.Route) { r.Auth = &model.RouteAuth{Scopes: []string{"admin"}} }),
		}}
	}
	h.apply(snap(1, true))
	hd := map[string]string{"x-api-key": s}
	for i := 0; i < 2; i++ {
		if got := httpStatus(h.check(envoyReq{routeID: rid("trial"), headers: hd})); got != 200 {
			t.Fatalf("dry run: %d", got)
		}
		if got := httpStatus(h.check(envoyReq{routeID: rid("strict"), headers: hd})); got != 403 {
			t.Fatalf("strict route after a dry-run allow: %d", got)
		}
	}
	h.apply(snap(2, false))
	if got := httpStatus(h.check(envoyReq{routeID: rid("trial"), headers: hd})); got != 403 {
		t.Fatalf("dry run turned off: %d", got)
	}
}

// Random kids naming a trusted issuer refetch the JWKS at most once per refetch interval.
func TestRandomKidsDoNotStormTheJWKS(t *testing.T) {
	h := newHarness(t, Options{})
	k := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k)
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	good := k.sign(t, jwt.MapClaims{"iss": testIssuer, "exp": h.clock.Now().Add(time.Hour).Unix()})
	if got := httpStatus(h.check(envoyReq{routeID: rid("r"), headers: bearer(good)})); got != 200 {
		t.Fatalf("good token: %d", got)
	}
	base := srv.fetches()
	for i := 0; i < 20; i++ {
		k.kid = fmt.Sprintf("random-%d", i)
		tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "exp": h.clock.Now().Add(time.Hour).Unix()})
		if got := httpStatus(h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)})); got != 401 {
			t.Fatalf("unknown kid: %d", got)
		}
	}
	if n := srv.fetches() - base; n > 1 {
		t.Fatalf("20 unknown kids caused %d JWKS fetches", n)
	}
}

// An ip-rule entry the model accepts (net.ParseCIDR: "10.0.0.0/08") but netip does not used
// to drop the whole rule: the allow list vanished and the route was open to everyone. Now
// such entries are read, and an entry that cannot be read never opens a route.
func TestIPRuleEntriesNeverFailOpen(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{publicRoute("internal", nil), publicRoute("broken", nil), publicRoute("pub", nil)},
		IPRules: []*model.IPRule{
			{ID: "office", Action: "allow", CIDRs: []string{"10.0.0.0/08"}, Routes: []string{"internal"}},
			{ID: "bad", Action: "allow", CIDRs: []string{"not-an-address"}, Routes: []string{"broken"}},
			{ID: "ban", Action: "deny", CIDRs: []string{"bogus/33", "203.0.113.9"}},
		},
	})
	for _, c := range []struct {
		name, route, src string
		status           int
	}{
		{"outside an allow list with a leading-zero mask", "internal", "192.168.1.1", 403},
		{"inside it", "internal", "10.9.8.7", 200},
		{"allow rule with no readable entry", "broken", "10.9.8.7", 403},
		{"deny rule with one bad entry still denies the good one", "pub", "203.0.113.9", 403},
		{"others pass", "pub", "203.0.113.10", 200},
	} {
		if got := httpStatus(h.check(envoyReq{routeID: rid(c.route), src: c.src})); got != c.status {
			t.Errorf("%s: status %d, want %d", c.name, got, c.status)
		}
	}
}

// An API key and a token sent together must be of one tenant (and one user): a tenant-less
// admin key cannot lend "admin" to a tenant user's token (neither alone passes).
func TestKeyAndTokenMustShareTenant(t *testing.T) {
	h := newHarness(t, Options{})
	k := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k)
	kPlat, sPlat := newKey(t, "platform", func(k *model.APIKey) { k.Scopes = []string{"admin"} })
	kAcme, sAcme := newKey(t, "acme-admin", func(k *model.APIKey) { k.Tenant, k.UserID, k.Scopes = "acme", "u", []string{"admin"} })
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL})
	snap.APIKeys = []*model.APIKey{kPlat, kAcme}
	snap.Routes = append(snap.Routes, route("acme-admin", func(r *model.Route) {
		r.Tenant = "acme"
		r.Auth = &model.RouteAuth{Scopes: []string{"admin"}}
	}))
	h.apply(snap)
	tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "tenant_id": "acme", "scope": "read",
		"exp": h.clock.Now().Add(time.Hour).Unix()})
	tokAdmin := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "tenant_id": "acme", "scope": "admin",
		"exp": h.clock.Now().Add(time.Hour).Unix()})
	noTenant := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "scope": "read", "exp": h.clock.Now().Add(time.Hour).Unix()})
	with := func(secret, tok string) map[string]string {
		return map[string]string{"x-api-key": secret, "authorization": "Bearer " + tok}
	}
	for _, c := range []struct {
		name   string
		hdrs   map[string]string
		status int
	}{
		{"token alone lacks the scope", bearer(tok), 403},
		{"tenant-less key alone is not of the tenant", map[string]string{"x-api-key": sPlat}, 403},
		{"tenant-less key + tenant token", with(sPlat, tok), 403},
		{"tenant key + tenant-less token", with(sAcme, noTenant), 403},
		{"the same user's key does not lend its scope to the token", with(sAcme, tok), 403},
		{"key and token of the same principal, the token holding the scope", with(sAcme, tokAdmin), 200},
	} {
		if got := httpStatus(h.check(envoyReq{routeID: rid("acme-admin"), headers: c.hdrs})); got != c.status {
			t.Errorf("%s: status %d, want %d", c.name, got, c.status)
		}
	}
}
