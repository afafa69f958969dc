package extauthz

import (
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"

	"github.com/api-gateway/api-gateway/model"
)

func removedSet(names []string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// A request let through by fail_open carries no identity, and its credentials are removed
// like those of any allowed request: the upstream must not receive a token the gateway
// could not check (it might trust it, or log it). keep_credentials still keeps them.
func TestFailOpenRemovesCredentials(t *testing.T) {
	for _, keep := range []bool{false, true} {
		// A real Redis client against a port nothing listens on: the quota store is down.
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), MaxRetries: -1})
		t.Cleanup(func() { rc.Close() })
		h := newHarness(t, Options{Quota: NewRedisQuota(rc)})
		k := genKey(t, "k1", "RS256")
		jwks := newJWKSServer(t, k)
		jwks.setDown(true)
		idp := newIDPServer(t)
		idp.Close() // the identity provider is down
		key, secret := newKey(t, "quota-key", func(k *model.APIKey) {
			k.UserID, k.Quota = "u", &model.KeyQuota{PerDay: 10}
		})
		snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: jwks.URL})
		snap.Settings.Auth.KeepCredentials = keep
		snap.Settings.Auth.Introspection = &model.Introspection{URL: idp.URL}
		snap.APIKeys = []*model.APIKey{key}
		snap.Routes = append(snap.Routes, route("open", func(r *model.Route) { r.Auth = &model.RouteAuth{FailOpen: true} }))
		h.apply(snap)
		tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()})
		for _, c := range []struct {
			name string
			hdrs map[string]string
		}{
			{"jwt with the JWKS down", map[string]string{"authorization": "Bearer " + tok, "x-api-key": secret}},
			{"opaque token with introspection down", map[string]string{"authorization": "Bearer opaque-1"}},
			{"api key with the quota store down", map[string]string{"x-api-key": secret}},
		} {
			resp := h.check(envoyReq{routeID: rid("open"), headers: c.hdrs})
			if httpStatus(resp) != 200 {
				t.Fatalf("keep=%v %s: status %d %s", keep, c.name, httpStatus(resp), resp.GetDeniedResponse().GetBody())
			}
			if m := resp.GetDynamicMetadata().GetFields()["auth_method"].GetStringValue(); m != MethodNone {
				t.Fatalf("keep=%v %s: auth_method %q", keep, c.name, m)
			}
			removed := removedSet(resp.GetOkResponse().GetHeadersToRemove())
			for _, hdr := range []string{"authorization", "x-api-key"} {
				if removed[hdr] == keep {
					t.Errorf("keep_credentials=%v %s: %s removed=%v", keep, c.name, hdr, removed[hdr])
				}
			}
			if !removed["x-user-id"] {
				t.Errorf("%s: x-user-id not removed", c.name)
			}
		}
	}
}

// A public route forwards an Authorization header the gateway does not interpret (Basic):
// only credentials the gateway consumed are removed.
func TestPublicRouteKeepsForeignAuthorization(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{publicRoute("pub", nil)}})
	resp := h.check(envoyReq{routeID: rid("pub"), headers: map[string]string{"authorization": "Basic dTpw"}})
	if httpStatus(resp) != 200 || removedSet(resp.GetOkResponse().GetHeadersToRemove())["authorization"] {
		t.Fatalf("status %d, removed %v", httpStatus(resp), resp.GetOkResponse().GetHeadersToRemove())
	}
}

// A dry-run route allows requests that an earlier stage (ip rules, geo) denied before the
// credentials were read: the credentials they carry are still removed (and no identity is
// forwarded), as on every other allow. The upstream must not get a token nobody checked.
func TestDryRunAllowRemovesCredentialsDeniedBeforeAuthentication(t *testing.T) {
	h := newHarness(t, Options{})
	key, secret := newKey(t, "k", func(k *model.APIKey) { k.UserID = "u" })
	h.apply(&model.Snapshot{Revision: 1, APIKeys: []*model.APIKey{key},
		Routes: []*model.Route{route("trial", func(r *model.Route) {
			r.Auth = &model.RouteAuth{DryRun: true, IPRules: []string{"ban"}}
		})},
		IPRules: []*model.IPRule{{ID: "ban", Action: "deny", CIDRs: []string{"203.0.113.0/24"}, Routes: []string{"trial"}}},
	})
	for _, hdrs := range []map[string]string{
		{"x-api-key": secret, "x-user-id": "admin"},
		{"authorization": "ApiKey " + secret},
		{"authorization": "Bearer some-token"},
	} {
		resp := h.check(envoyReq{routeID: rid("trial"), src: "203.0.113.7", headers: hdrs})
		if httpStatus(resp) != 200 {
			t.Fatalf("%v: dry run status %d", hdrs, httpStatus(resp))
		}
		removed := removedSet(resp.GetOkResponse().GetHeadersToRemove())
		for name := range hdrs {
			if !removed[name] {
				t.Errorf("%v: %s not removed (removed %v)", hdrs, name, resp.GetOkResponse().GetHeadersToRemove())
			}
		}
	}
}

// A route that accepts only issuer A fails open when A's keys cannot be fetched, not when
// some other configured issuer's can't: a token naming issuer B (forged, nothing checks it
// while B's JWKS is down) used to be let through the fail-open route that does not even
// accept B. Likewise a token for another audience. Both are refused before any key lookup.
func TestFailOpenOnlyForIssuersAndAudiencesTheRouteAccepts(t *testing.T) {
	h := newHarness(t, Options{})
	ka, kb := genKey(t, "ka", "RS256"), genKey(t, "kb", "RS256")
	up := newJWKSServer(t, ka)
	down := newJWKSServer(t, kb)
	down.setDown(true)
	const other = "https://other-idp.test"
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: up.URL}, model.JWTIssuer{Issuer: other, JWKSURI: down.URL})
	snap.Routes = append(snap.Routes, route("open", func(r *model.Route) {
		r.Auth = &model.RouteAuth{FailOpen: true, Issuers: []string{testIssuer}}
	}), route("open-aud", func(r *model.Route) {
		r.Auth = &model.RouteAuth{FailOpen: true, Audience: []string{"orders"}}
	}))
	h.apply(snap)
	exp := h.clock.Now().Add(time.Hour).Unix()
	forged := kb.sign(t, jwt.MapClaims{"iss": other, "sub": "root", "aud": "billing", "exp": exp})
	for _, c := range []struct{ route, reason string }{
		{"open", ReasonInvalidIssuer},
		{"open-aud", ReasonInvalidAudience},
	} {
		resp := h.check(envoyReq{routeID: rid(c.route), headers: map[string]string{"authorization": "Bearer " + forged}})
		if httpStatus(resp) != 401 || errCode(t, resp) != c.reason {
			t.Fatalf("%s: a token of an issuer whose JWKS is down: status %d %s", c.route, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
	if down.fetches() != 0 {
		t.Fatalf("the other issuer's JWKS was fetched %d times for a route that refuses its tokens anyway", down.fetches())
	}
	// A token of an accepted issuer and audience still fails open while its keys are down.
	ok := kb.sign(t, jwt.MapClaims{"iss": other, "sub": "u", "aud": "orders", "exp": exp})
	if got := httpStatus(h.check(envoyReq{routeID: rid("open-aud"), headers: map[string]string{"authorization": "Bearer " + ok}})); got != 200 {
		t.Fatalf("accepted issuer, keys down, fail-open route: status %d", got)
	}
}
