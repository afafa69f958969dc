package extauthz

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/api-gateway/api-gateway/model"
)

func jwtSnapshot(rev uint64, is ...model.JWTIssuer) *model.Snapshot {
	return &model.Snapshot{Revision: rev, Routes: []*model.Route{route("r", nil)},
		Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{JWTIssuers: is}}}
}

func TestJWTAlgorithms(t *testing.T) {
	h := newHarness(t, Options{})
	var keys []*signingKey
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"} {
		keys = append(keys, genKey(t, "kid-"+alg, alg))
	}
	srv := newJWKSServer(t, keys...)
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	now := h.clock.Now()
	for _, k := range keys {
		tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u-" + k.alg, "exp": now.Add(time.Minute).Unix()})
		resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)})
		if httpStatus(resp) != 200 || okHeaders(resp)["x-user-id"] != "u-"+k.alg {
			t.Errorf("%s: status %d %s", k.alg, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
	// A key used with another algorithm of its family is refused (the JWK pins its alg).
	rs := keys[0]
	tk := jwt.NewWithClaims(jwt.SigningMethodPS256, jwt.MapClaims{"iss": testIssuer, "exp": now.Add(time.Minute).Unix()})
	tk.Header["kid"] = rs.kid
	s, _ := tk.SignedString(rs.priv)
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(s)}); httpStatus(resp) != 401 {
		t.Fatalf("RS256 key used for PS256: status %d", httpStatus(resp))
	}
	// An issuer restricted to ES256 refuses RS256 tokens.
	h.apply(jwtSnapshot(2, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL, Algorithms: []string{"ES256"}}))
	tok := rs.sign(t, jwt.MapClaims{"iss": testIssuer, "exp": now.Add(time.Minute).Unix()})
	if resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)}); httpStatus(resp) != 401 {
		t.Fatalf("RS256 on an ES256-only issuer: status %d", httpStatus(resp))
	}
}

func TestJWKSRotationAndOutage(t *testing.T) {
	h := newHarness(t, Options{})
	k1, k2 := genKey(t, "k1", "RS256"), genKey(t, "k2", "ES256")
	srv := newJWKSServer(t, k1)
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL, RefreshInterval: model.Duration(time.Minute)}))
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()}
	}
	check := func(tok string) int { return httpStatus(h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)})) }

	old := k1.sign(t, claims())
	if check(old) != 200 || srv.fetches() != 1 {
		t.Fatalf("k1 token: fetches %d", srv.fetches())
	}
	// Rotation: the server now publishes k1 and k2. A k2 token triggers one refetch.
	srv.set(k1, k2)
	h.clock.Add(2 * time.Minute)
	newTok := k2.sign(t, claims())
	if check(newTok) != 200 {
		t.Fatal("new kid not accepted after a refetch")
	}
	if srv.fetches() != 2 {
		t.Fatalf("fetches %d, want 2", srv.fetches())
	}
	// Unknown kids refetch at most once per interval: a flood of bogus kids costs nothing.
	bogus := genKey(t, "k-bogus", "RS256")
	for i := 0; i < 5; i++ {
		if check(bogus.sign(t, claims())) != 401 {
			t.Fatal("unknown kid accepted")
		}
	}
	if srv.fetches() != 2 {
		t.Fatalf("fetches %d, want 2 (the last fetch was within the interval)", srv.fetches())
	}
	h.clock.Add(2 * time.Minute)
	for i := 0; i < 5; i++ {
		if check(bogus.sign(t, claims())) != 401 {
			t.Fatal("unknown kid accepted")
		}
	}
	if srv.fetches() != 3 {
		t.Fatalf("fetches %d, want 3 (one refetch per interval)", srv.fetches())
	}
	// k1 is removed; after the next background refresh its tokens (even cached ones) fail.
	srv.set(k2)
	h.clock.Add(2 * time.Minute)
	h.engine.RefreshKeys(context.Background())
	if check(old) != 401 {
		t.Fatal("token of a removed key still accepted")
	}
	if check(newTok) != 200 {
		t.Fatal("k2 token rejected after refresh")
	}
	// Outage: the endpoint fails; the cached keys keep working through refreshes.
	srv.setDown(true)
	h.clock.Add(2 * time.Minute)
	h.engine.RefreshKeys(context.Background())
	fresh := k2.sign(t, claims())
	if check(fresh) != 200 {
		t.Fatal("cached keys not used during a JWKS outage")
	}
	if fetched := srv.fetches(); fetched < 5 {
		t.Fatalf("the refresh during the outage did not reach the server (%d fetches)", fetched)
	}
}

func TestJWKSBackgroundRefreshHonoursMaxAge(t *testing.T) {
	h := newHarness(t, Options{})
	k1 := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k1)
	srv.maxAge = 60
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	h.engine.RefreshKeys(context.Background()) // first fetch
	if srv.fetches() != 1 {
		t.Fatalf("fetches %d", srv.fetches())
	}
	h.clock.Add(30 * time.Second)
	h.engine.RefreshKeys(context.Background())
	if srv.fetches() != 1 {
		t.Fatal("refreshed before max-age was near")
	}
	h.clock.Add(25 * time.Second) // 55s > 90% of 60s
	h.engine.RefreshKeys(context.Background())
	if srv.fetches() != 2 {
		t.Fatalf("not refreshed before expiry: %d fetches", srv.fetches())
	}
}

func TestJWKSUnreachableFailsClosedOrOpen(t *testing.T) {
	h := newHarness(t, Options{})
	k1 := genKey(t, "k1", "RS256")
	srv := newJWKSServer(t, k1)
	srv.setDown(true)
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL})
	snap.Routes = append(snap.Routes, route("open", func(r *model.Route) { r.Auth = &model.RouteAuth{FailOpen: true} }))
	h.apply(snap)
	tok := k1.sign(t, jwt.MapClaims{"iss": testIssuer, "exp": h.clock.Now().Add(time.Hour).Unix()})
	resp := h.check(envoyReq{routeID: rid("r"), headers: bearer(tok)})
	if httpStatus(resp) != 503 || errCode(t, resp) != ReasonAuthUnavailable {
		t.Fatalf("fail closed: status %d %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
	}
	h.clock.Add(time.Minute)
	resp = h.check(envoyReq{routeID: rid("open"), headers: bearer(tok)})
	if httpStatus(resp) != 200 {
		t.Fatalf("fail open: status %d", httpStatus(resp))
	}
	if md := resp.GetDynamicMetadata().GetFields(); md["auth_method"].GetStringValue() != "none" || md["user_id"] != nil {
		t.Fatalf("fail open must not carry an identity: %v", md)
	}
	if got := counterValue(t, h, "api_gateway_authz_dependency_failures_total", map[string]string{"mode": "fail_open"}); got != 1 {
		t.Fatalf("fail_open dependency failures = %v", got)
	}
}

// TestOIDCDiscovery runs against mockoidc, a real OIDC provider: keys are found through
// /.well-known/openid-configuration, and a token from its code flow is accepted.
func TestOIDCDiscovery(t *testing.T) {
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	h := newHarness(t, Options{Clock: time.Now})
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: m.Issuer(), Audiences: []string{m.ClientID}}))

	// Authorization code flow against the provider.
	m.QueueUser(&mockoidc.MockUser{Subject: "oidc-user-7", Email: "u7@example.com", Groups: []string{"g"}})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authURL := m.AuthorizationEndpoint() + "?" + url.Values{"client_id": {m.ClientID}, "response_type": {"code"},
		"scope": {"openid email"}, "redirect_uri": {"http://127.0.0.1/cb"}, "state": {"s"}, "nonce": {"n"}}.Encode()
	resp, err := noRedirect.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %q", resp.Header.Get("Location"))
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://127.0.0.1/cb"},
		"client_id": {m.ClientID}, "client_secret": {m.ClientSecret}}
	tr, err := http.PostForm(m.TokenEndpoint(), form)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		IDToken string `json:"id_token"`
	}
	if err := decodeJSON(tr, &body); err != nil || body.IDToken == "" {
		t.Fatalf("token response: %v %+v", err, body)
	}
	r := h.check(envoyReq{routeID: rid("r"), headers: bearer(body.IDToken)})
	if httpStatus(r) != 200 {
		t.Fatalf("mockoidc token: status %d %s", httpStatus(r), r.GetDeniedResponse().GetBody())
	}
	if got := okHeaders(r)["x-user-id"]; got != "oidc-user-7" {
		t.Fatalf("x-user-id %q", got)
	}
	// A token for another client (audience) of the same provider is refused.
	other, _ := m.Keypair.SignJWT(jwt.MapClaims{"iss": m.Issuer(), "aud": "another-client", "sub": "x",
		"exp": time.Now().Add(time.Hour).Unix()})
	if r := h.check(envoyReq{routeID: rid("r"), headers: bearer(other)}); httpStatus(r) != 401 || !strings.Contains(r.GetDeniedResponse().GetBody(), ReasonInvalidAudience) {
		t.Fatalf("other audience: %d %s", httpStatus(r), r.GetDeniedResponse().GetBody())
	}
}
