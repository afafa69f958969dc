package extauthz

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/api-gateway/api-gateway/model"
)

// idpServer is a real RFC 7662 introspection endpoint over HTTP: it answers the claims
// registered for a token (inactive for any other), counts calls, and can be held so that
// calls stay in flight.
type idpServer struct {
	*httptest.Server
	calls  atomic.Int64
	mu     sync.Mutex
	tokens map[string]map[string]any
	hold   chan struct{} // when not nil, every call waits for it (or its own cancellation)
	// gone records calls whose request context ended before they were answered.
	gone atomic.Int64
}

func newIDPServer(t testing.TB) *idpServer {
	s := &idpServer{tokens: map[string]map[string]any{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		// Read the body first: only then does net/http watch the connection, so that a
		// client that gives up cancels r.Context().
		_ = r.ParseForm()
		s.mu.Lock()
		hold := s.hold
		s.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				s.gone.Add(1)
				return
			}
		}
		s.mu.Lock()
		claims, ok := s.tokens[r.PostForm.Get("token")]
		s.mu.Unlock()
		if !ok {
			claims = map[string]any{"active": false}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(claims)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *idpServer) add(tok string, claims map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := map[string]any{"active": true}
	for k, v := range claims {
		c[k] = v
	}
	s.tokens[tok] = c
}

func (s *idpServer) setHold(ch chan struct{}) {
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
}

// principalFixture: one tenant's route needs scope admin and role owner; keys and tokens
// of alice (owner, scope read), mallory (scope admin) and others, as JWTs and opaque tokens.
type principalFixture struct {
	h       *harness
	idp     *idpServer
	secrets map[string]string
	jwts    map[string]string
}

func newPrincipalFixture(t *testing.T) *principalFixture {
	idp := newIDPServer(t)
	f := &principalFixture{idp: idp, secrets: map[string]string{}, jwts: map[string]string{}}
	f.h = newHarness(t, Options{Introspection: &model.Introspection{URL: idp.URL}})
	sk := genKey(t, "k1", "RS256")
	jwks := newJWKSServer(t, sk)
	var keys []*model.APIKey
	addKey := func(id, user, tenant string, scopes ...string) {
		k, s := newKey(t, id, func(k *model.APIKey) { k.UserID, k.Tenant, k.Scopes = user, tenant, scopes })
		keys = append(keys, k)
		f.secrets[id] = s
	}
	addKey("mallory", "mallory", "acme", "admin")
	addKey("alice", "alice", "acme", "admin")
	addKey("alice-read", "alice", "acme", "read")
	addKey("alice-globex", "alice", "globex", "admin")
	addKey("alice-untenanted", "alice", "", "admin")
	addKey("service", "", "acme", "admin")
	addKey("bob-untenanted", "bob", "", "read")
	exp := f.h.clock.Now().Add(time.Hour).Unix()
	addTok := func(name string, claims map[string]any) {
		c := jwt.MapClaims{"iss": testIssuer, "exp": exp}
		for k, v := range claims {
			c[k] = v
		}
		f.jwts[name] = sk.sign(t, c)
		idp.add("opaque-"+name, map[string]any(c))
	}
	addTok("alice", map[string]any{"sub": "alice", "tenant_id": "acme", "scope": "read", "roles": []string{"owner"}})
	addTok("alice-admin", map[string]any{"sub": "alice", "tenant_id": "acme", "scope": "read admin", "roles": []string{"owner"}})
	addTok("nobody", map[string]any{"tenant_id": "acme", "scope": "admin", "roles": []string{"owner"}})
	addTok("bob-untenanted", map[string]any{"sub": "bob", "scope": "admin", "roles": []string{"owner"}})
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: jwks.URL})
	snap.APIKeys = keys
	snap.Routes = append(snap.Routes, route("owner-admin", func(r *model.Route) {
		r.Auth = &model.RouteAuth{Scopes: []string{"admin"}, Roles: []string{"owner"}}
	}))
	f.h.apply(snap)
	return f
}

// Two credentials sent together must name one principal (user and tenant); scopes and
// roles never combine across them. The token's identity decides; the key proves that the
// same principal sent it. Both for JWTs and for introspected (opaque) tokens.
func TestKeyAndTokenMustNameOnePrincipal(t *testing.T) {
	f := newPrincipalFixture(t)
	for _, kind := range []string{"jwt", "opaque"} {
		tok := func(name string) string {
			if kind == "jwt" {
				return f.jwts[name]
			}
			return "opaque-" + name
		}
		both := func(key, token string) map[string]string {
			return map[string]string{"x-api-key": f.secrets[key], "authorization": "Bearer " + tok(token)}
		}
		for _, c := range []struct {
			name   string
			hdrs   map[string]string
			status int
			reason string
			scopes string // x-auth-scopes of an allow
		}{
			{"alice's token alone lacks the scope", map[string]string{"authorization": "Bearer " + tok("alice")}, 403, ReasonInsufficientScope, ""},
			{"mallory's key alone lacks the role", map[string]string{"x-api-key": f.secrets["mallory"]}, 403, ReasonInsufficientRole, ""},
			{"alice's token and mallory's key", both("mallory", "alice"), 403, ReasonCredentialsMismatch, ""},
			{"a key naming no user and alice's token", both("service", "alice"), 403, ReasonCredentialsMismatch, ""},
			{"a token naming no user and a key naming no user", both("service", "nobody"), 403, ReasonCredentialsMismatch, ""},
			{"alice's key of another tenant", both("alice-globex", "alice"), 403, ReasonCredentialsMismatch, ""},
			{"alice's key of no tenant with her tenant's token", both("alice-untenanted", "alice"), 403, ReasonCredentialsMismatch, ""},
			{"alice's own admin key does not lend its scope to her token", both("alice", "alice"), 403, ReasonInsufficientScope, ""},
			{"alice's token decides, her key proves her", both("alice-read", "alice-admin"), 200, "", "read admin"},
			{"one tenant-less principal on both", both("bob-untenanted", "bob-untenanted"), 200, "", "admin"},
		} {
			resp := f.h.check(envoyReq{routeID: rid("owner-admin"), headers: c.hdrs})
			if got := httpStatus(resp); got != c.status {
				t.Errorf("%s/%s: status %d, want %d (%s)", kind, c.name, got, c.status, resp.GetDeniedResponse().GetBody())
				continue
			}
			if c.status != 200 {
				if got := errCode(t, resp); got != c.reason {
					t.Errorf("%s/%s: reason %s, want %s", kind, c.name, got, c.reason)
				}
				if body := resp.GetDeniedResponse().GetBody(); strings.Contains(body, "alice") || strings.Contains(body, "mallory") {
					t.Errorf("%s/%s: the denial names a principal: %s", kind, c.name, body)
				}
				continue
			}
			if got := okHeaders(resp)["x-auth-scopes"]; got != c.scopes {
				t.Errorf("%s/%s: x-auth-scopes %q, want %q", kind, c.name, got, c.scopes)
			}
		}
	}
}

// The answer built for one pair of credentials is never handed to another pair: alice's
// token with her key, then with mallory's, then alone, each gets its own answer.
func TestRememberedAnswerIsNotSharedAcrossKeys(t *testing.T) {
	f := newPrincipalFixture(t)
	both := func(key string) map[string]string {
		return map[string]string{"x-api-key": f.secrets[key], "authorization": "Bearer " + f.jwts["alice-admin"]}
	}
	for i := 0; i < 2; i++ {
		resp := f.h.check(envoyReq{routeID: rid("owner-admin"), headers: both("alice-read")})
		if httpStatus(resp) != 200 || okHeaders(resp)["x-api-key-id"] != "alice-read" || okHeaders(resp)["x-user-id"] != "alice" {
			t.Fatalf("alice's pair: status %d, headers %v", httpStatus(resp), okHeaders(resp))
		}
		resp = f.h.check(envoyReq{routeID: rid("owner-admin"), headers: both("mallory")})
		if httpStatus(resp) != 403 || errCode(t, resp) != ReasonCredentialsMismatch {
			t.Fatalf("alice's token with mallory's key after alice's pair: status %d", httpStatus(resp))
		}
		resp = f.h.check(envoyReq{routeID: rid("owner-admin"), headers: bearer(f.jwts["alice-admin"])})
		if httpStatus(resp) != 200 || okHeaders(resp)["x-api-key-id"] != "" {
			t.Fatalf("alice's token alone: status %d, headers %v", httpStatus(resp), okHeaders(resp))
		}
	}
}

// Concurrent callers mixing matching and mismatching pairs each get their own answer.
func TestConcurrentCredentialPairsDoNotMix(t *testing.T) {
	f := newPrincipalFixture(t)
	var wg sync.WaitGroup
	errs := make(chan string, 400)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				key, want := "alice-read", 200
				if (w+i)%2 == 1 {
					key, want = "mallory", 403
				}
				hd := map[string]string{"x-api-key": f.secrets[key], "authorization": "Bearer " + f.jwts["alice-admin"]}
				resp, err := f.h.client.Check(t.Context(), envoyReq{routeID: rid("owner-admin"), headers: hd}.build())
				if err != nil {
					errs <- err.Error()
					return
				}
				if got := httpStatus(resp); got != want {
					errs <- key + ": unexpected status"
				} else if want == 200 && okHeaders(resp)["x-api-key-id"] != key {
					errs <- key + ": another request's key id"
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
