package extauthz

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/api-gateway/api-gateway/model"
)

const testIssuer = "https://issuer.test"

// fixture is a gateway configuration with an issuer, routes and keys of every kind.
type fixture struct {
	h       *harness
	jwks    *jwksServer
	k1      *signingKey
	secrets map[string]string
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{h: newHarness(t, Options{}), k1: genKey(t, "k1", "RS256"), secrets: map[string]string{}}
	f.jwks = newJWKSServer(t, f.k1)
	f.h.apply(f.snapshot(t))
	return f
}

func (f *fixture) snapshot(t *testing.T) *model.Snapshot {
	keys := []*model.APIKey{}
	add := func(id string, mod func(*model.APIKey)) {
		k, s := newKey(t, id, mod)
		keys = append(keys, k)
		f.secrets[id] = s
	}
	past := f.h.clock.Now().Add(-time.Hour)
	add("good", func(k *model.APIKey) { k.Tenant, k.UserID, k.Scopes = "acme", "svc-1", []string{"orders:read"} })
	add("revoked", func(k *model.APIKey) { k.Tenant, k.Scopes, k.Revoked = "acme", []string{"orders:read"}, true })
	add("expired", func(k *model.APIKey) { k.Tenant, k.Scopes, k.ExpiresAt = "acme", []string{"orders:read"}, &past })
	add("office", func(k *model.APIKey) {
		k.Tenant, k.Scopes = "acme", []string{"orders:read"}
		k.Restrictions = &model.KeyRestrictions{AllowedIPs: []string{"192.168.1.0/24", "2001:db8::/32"}}
	})
	add("daytime", func(k *model.APIKey) {
		k.Tenant, k.Scopes = "acme", []string{"orders:read"}
		// 2026-03-04 12:00 UTC is a Wednesday, 13:00 in Berlin.
		k.Restrictions = &model.KeyRestrictions{AllowedTimeWindows: []model.TimeWindow{
			{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "09:00", End: "17:00", Timezone: "Europe/Berlin"}}}
	})
	add("night", func(k *model.APIKey) {
		k.Tenant, k.Scopes = "acme", []string{"orders:read"}
		k.Restrictions = &model.KeyRestrictions{AllowedTimeWindows: []model.TimeWindow{
			{Start: "22:00", End: "06:00", Timezone: "Europe/Berlin"}}}
	})
	add("globex", func(k *model.APIKey) { k.Tenant, k.Scopes = "globex", []string{"orders:read"} })
	add("scoped", func(k *model.APIKey) {
		k.Tenant, k.Scopes = "acme", []string{"orders:read"}
		k.Restrictions = &model.KeyRestrictions{AllowedRoutes: []string{"public"}}
	})
	f2 := false
	return &model.Snapshot{
		Revision: 1,
		Routes: []*model.Route{
			route("orders", func(r *model.Route) {
				r.Tenant = "acme"
				r.Auth = &model.RouteAuth{Scopes: []string{"orders:read"}, ClaimsToHeaders: map[string]string{"email": "x-user-email"}}
			}),
			route("admin", func(r *model.Route) { r.Auth = &model.RouteAuth{Roles: []string{"admin"}} }),
			route("public", func(r *model.Route) { r.RequireAuth = &f2 }),
			route("jwtonly", func(r *model.Route) { r.Auth = &model.RouteAuth{Methods: []string{"jwt"}} }),
		},
		APIKeys: keys,
		Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{JWTIssuers: []model.JWTIssuer{
			{Issuer: testIssuer, JWKSURI: f.jwks.URL, Audiences: []string{"api"}, ClockSkew: model.Duration(30 * time.Second)},
		}}},
	}
}

func (f *fixture) claims(mod func(jwt.MapClaims)) jwt.MapClaims {
	now := f.h.clock.Now()
	c := jwt.MapClaims{"iss": testIssuer, "sub": "user-42", "aud": "api", "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "nbf": now.Unix(), "scope": "orders:read profile", "tenant_id": "acme",
		"roles": []string{"reader"}, "email": "ada@example.com"}
	if mod != nil {
		mod(c)
	}
	return c
}

func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

func TestAllowWithJWTAndIdentityPropagation(t *testing.T) {
	f := newFixture(t)
	tok := f.k1.sign(t, f.claims(nil))
	resp := f.h.check(envoyReq{routeID: rid("orders"), path: "/orders/1?x=1", headers: map[string]string{
		"authorization": "Bearer " + tok, "x-user-id": "spoofed", "x-api-key-id": "spoofed"}})
	if httpStatus(resp) != 200 {
		t.Fatalf("status %d: %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
	}
	h := okHeaders(resp)
	if h["x-user-id"] != "user-42" || h["x-tenant-id"] != "acme" || h["x-auth-scopes"] != "orders:read profile" || h["x-user-email"] != "ada@example.com" {
		t.Fatalf("identity headers: %v", h)
	}
	removed := strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ",")
	for _, want := range []string{"authorization", "x-api-key", "x-api-key-id"} {
		if !strings.Contains(removed, want) {
			t.Errorf("headers_to_remove %q lacks %s", removed, want)
		}
	}
	md := resp.GetDynamicMetadata().GetFields()
	if md["user_id"].GetStringValue() != "user-42" || md["tenant_id"].GetStringValue() != "acme" ||
		md["auth_method"].GetStringValue() != "jwt" || md["scopes"].GetStringValue() != "orders:read profile" {
		t.Fatalf("dynamic metadata: %v", md)
	}
	// The second check is served from the verified-token cache: no extra JWKS fetch.
	before := f.jwks.fetches()
	if httpStatus(f.h.check(envoyReq{routeID: rid("orders"), headers: bearer(tok)})) != 200 {
		t.Fatal("cached token denied")
	}
	if f.jwks.fetches() != before {
		t.Fatal("cached token fetched the JWKS again")
	}
}

func TestAllowWithAPIKey(t *testing.T) {
	f := newFixture(t)
	for _, hdr := range []map[string]string{
		{"x-api-key": f.secrets["good"]},
		{"authorization": "ApiKey " + f.secrets["good"]},
	} {
		resp := f.h.check(envoyReq{routeID: rid("orders"), headers: hdr})
		if httpStatus(resp) != 200 {
			t.Fatalf("status %d: %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
		h := okHeaders(resp)
		if h["x-api-key-id"] != "good" || h["x-user-id"] != "svc-1" || h["x-tenant-id"] != "acme" {
			t.Fatalf("headers %v", h)
		}
		md := resp.GetDynamicMetadata().GetFields()
		if md["api_key_id"].GetStringValue() != "good" || md["auth_method"].GetStringValue() != "api_key" {
			t.Fatalf("metadata %v", md)
		}
	}
}

func TestAttacks(t *testing.T) {
	f := newFixture(t)
	now := f.h.clock.Now()
	other := genKey(t, "k1", "RS256") // same kid, different key: a forged signature
	pub, _ := x509.MarshalPKIXPublicKey(f.k1.priv.Public().(*rsa.PublicKey))
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	hsTok := func(secret []byte) string {
		tk := jwt.NewWithClaims(jwt.SigningMethodHS256, f.claims(nil))
		tk.Header["kid"] = "k1"
		s, err := tk.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	noneTok := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodNone, f.claims(nil))
		tk.Header["kid"] = "k1"
		s, err := tk.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sign := func(mod func(jwt.MapClaims)) string { return f.k1.sign(t, f.claims(mod)) }
	goodID := f.secrets["good"][:len(f.secrets["good"])-apiKeyRandChars]
	badSecret := goodID + strings.Repeat("A", apiKeyRandChars)
	unknownID, _, _ := NewAPIKeySecret("nosuchkey")

	cases := []struct {
		name   string
		route  string
		src    string
		hdr    map[string]string
		status int
		code   string
	}{
		{"no credentials", "orders", "", nil, 401, ReasonMissingCredentials},
		{"expired token", "orders", "", bearer(sign(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), 401, ReasonTokenExpired},
		{"not yet valid", "orders", "", bearer(sign(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Minute).Unix() })), 401, ReasonTokenNotYetValid},
		{"no exp", "orders", "", bearer(sign(func(c jwt.MapClaims) { delete(c, "exp") })), 401, ReasonInvalidToken},
		{"wrong issuer", "orders", "", bearer(sign(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })), 401, ReasonInvalidIssuer},
		{"wrong audience", "orders", "", bearer(sign(func(c jwt.MapClaims) { c["aud"] = "other" })), 401, ReasonInvalidAudience},
		{"bad signature", "orders", "", bearer(other.sign(t, f.claims(nil))), 401, ReasonInvalidSignature},
		{"tampered payload", "orders", "", bearer(tamper(sign(nil))), 401, ReasonInvalidSignature},
		{"alg none", "orders", "", bearer(noneTok()), 401, ReasonInvalidToken},
		{"HS256 with the RSA public key (PEM)", "orders", "", bearer(hsTok(pubPEM)), 401, ReasonInvalidToken},
		{"HS256 with the RSA public key (DER)", "orders", "", bearer(hsTok(pub)), 401, ReasonInvalidToken},
		{"garbage token", "orders", "", bearer("a.b.c"), 401, ReasonInvalidToken},
		{"wrong scope", "orders", "", bearer(sign(func(c jwt.MapClaims) { c["scope"] = "orders:write" })), 403, ReasonInsufficientScope},
		{"missing role", "admin", "", bearer(sign(nil)), 403, ReasonInsufficientRole},
		{"other tenant (token)", "orders", "", bearer(sign(func(c jwt.MapClaims) { c["tenant_id"] = "globex" })), 403, ReasonTenantMismatch},
		{"other tenant (key)", "orders", "", map[string]string{"x-api-key": f.secrets["globex"]}, 403, ReasonTenantMismatch},
		{"revoked key", "orders", "", map[string]string{"x-api-key": f.secrets["revoked"]}, 401, ReasonAPIKeyRevoked},
		{"expired key", "orders", "", map[string]string{"x-api-key": f.secrets["expired"]}, 401, ReasonAPIKeyExpired},
		{"key from a disallowed IP", "orders", "10.9.9.9", map[string]string{"x-api-key": f.secrets["office"]}, 403, ReasonKeyIPNotAllowed},
		{"key outside its time window", "orders", "", map[string]string{"x-api-key": f.secrets["night"]}, 403, ReasonKeyOutsideWindow},
		{"key on a route it may not use", "orders", "", map[string]string{"x-api-key": f.secrets["scoped"]}, 403, ReasonKeyRouteNotAllowed},
		{"unknown key id", "orders", "", map[string]string{"x-api-key": unknownID}, 401, ReasonInvalidAPIKey},
		{"wrong secret for a known id", "orders", "", map[string]string{"x-api-key": badSecret}, 401, ReasonInvalidAPIKey},
		{"not a key at all", "orders", "", map[string]string{"x-api-key": "hunter2"}, 401, ReasonInvalidAPIKey},
		{"API key on a JWT-only route", "jwtonly", "", map[string]string{"x-api-key": f.secrets["good"]}, 401, ReasonMethodNotAccepted},
		{"unknown route", "nosuch", "", bearer(sign(nil)), 403, ReasonUnknownRoute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := f.h.check(envoyReq{routeID: rid(c.route), src: c.src, headers: c.hdr, id: "attack-1"})
			if got := httpStatus(resp); got != c.status {
				t.Fatalf("status %d, want %d (%s)", got, c.status, resp.GetDeniedResponse().GetBody())
			}
			if got := errCode(t, resp); got != c.code {
				t.Fatalf("code %q, want %q", got, c.code)
			}
			if !strings.Contains(resp.GetDeniedResponse().GetBody(), `"request_id":"attack-1"`) {
				t.Fatalf("body lacks the request id: %s", resp.GetDeniedResponse().GetBody())
			}
			if c.status == 401 && deniedHeader(resp, "www-authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	// The same answer for an unknown id and a wrong secret: nothing to learn from it.
	a := f.h.check(envoyReq{routeID: rid("orders"), headers: map[string]string{"x-api-key": unknownID}, id: "x"})
	b := f.h.check(envoyReq{routeID: rid("orders"), headers: map[string]string{"x-api-key": badSecret}, id: "x"})
	if a.GetDeniedResponse().GetBody() != b.GetDeniedResponse().GetBody() {
		t.Fatalf("unknown id and bad secret answer differently:\n%s\n%s", a.GetDeniedResponse().GetBody(), b.GetDeniedResponse().GetBody())
	}
	// Allowed counterparts, so the table cannot pass by denying everything.
	for name, r := range map[string]envoyReq{
		"office key from the office": {routeID: rid("orders"), src: "192.168.1.77", headers: map[string]string{"x-api-key": f.secrets["office"]}},
		"office key over IPv6":       {routeID: rid("orders"), src: "2001:db8::5", headers: map[string]string{"x-api-key": f.secrets["office"]}},
		"daytime key in its window":  {routeID: rid("orders"), headers: map[string]string{"x-api-key": f.secrets["daytime"]}},
		"scoped key on its route":    {routeID: rid("public"), headers: map[string]string{"x-api-key": f.secrets["scoped"]}},
		"public route, no key":       {routeID: rid("public")},
		"admin with role":            {routeID: rid("admin"), headers: bearer(sign(func(c jwt.MapClaims) { c["roles"] = []string{"admin"} }))},
	} {
		if resp := f.h.check(r); httpStatus(resp) != 200 {
			t.Errorf("%s: status %d %s", name, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
	// Night key: move the clock into its window (23:30 Berlin).
	f.h.clock.Set(time.Date(2026, 3, 4, 22, 30, 0, 0, time.UTC))
	if resp := f.h.check(envoyReq{routeID: rid("orders"), headers: map[string]string{"x-api-key": f.secrets["night"]}}); httpStatus(resp) != 200 {
		t.Fatalf("night key at night: %s", resp.GetDeniedResponse().GetBody())
	}
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	c := jwt.MapClaims{}
	_, _, _ = jwt.NewParser().ParseUnverified(tok, c)
	c["sub"] = "admin"
	forged := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	s, _ := forged.SigningString()
	return s[:strings.IndexByte(s, '.')] + "." + strings.Split(s, ".")[1] + "." + parts[2]
}
