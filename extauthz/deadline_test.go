package extauthz

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/api-gateway/api-gateway/model"
)

// deadlineHarness: a quota-limited key, an introspecting IdP, a fail-closed and a fail-open
// route.
func deadlineHarness(t *testing.T) (*harness, *idpServer, string) {
	idp := newIDPServer(t)
	h := newHarness(t, Options{})
	k, secret := newKey(t, "metered", func(k *model.APIKey) { k.UserID, k.Quota = "u", &model.KeyQuota{PerDay: 1} })
	h.apply(&model.Snapshot{Revision: 1, APIKeys: []*model.APIKey{k},
		Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{Introspection: &model.Introspection{URL: idp.URL}}},
		Routes:   []*model.Route{route("closed", nil), route("open", func(r *model.Route) { r.Auth = &model.RouteAuth{FailOpen: true} })}})
	return h, idp, secret
}

// A Check whose deadline has passed stops before the next stage: Envoy no longer waits for
// the answer, so spending a quota unit, an outbound call or a dependency-failure count on
// it is waste (and, for the quota, a charge for a request that was never served).
func TestCheckPastItsDeadlineDoesNoMoreWork(t *testing.T) {
	h, idp, secret := deadlineHarness(t)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	key := &Request{RouteID: "closed", HasRouteID: true, Headers: map[string]string{"x-api-key": secret}}
	if d := h.engine.Check(done, key); d.Allowed || d.Reason != ReasonDeadlineExceeded {
		t.Fatalf("a check past its deadline: allowed %v, reason %s", d.Allowed, d.Reason)
	}
	// The quota unit (one a day) was not spent on the abandoned check.
	if d := h.engine.Check(context.Background(), key); !d.Allowed {
		t.Fatalf("the live check after an abandoned one: %s", d.Reason)
	}
	tok := &Request{RouteID: "open", HasRouteID: true, Headers: bearer("opaque")}
	if d := h.engine.Check(done, tok); d.Allowed {
		t.Fatalf("an abandoned check on a fail-open route was allowed (%s)", d.Outcome)
	}
	if n := idp.calls.Load(); n != 0 {
		t.Fatalf("an abandoned check made %d introspection calls", n)
	}
	if got := counterValue(t, h, "api_gateway_authz_dependency_failures_total", nil); got != 0 {
		t.Fatalf("an abandoned check counted %v dependency failures", got)
	}
	if got := counterValue(t, h, "api_gateway_authz_checks_abandoned_total", nil); got != 2 {
		t.Fatalf("abandoned checks counted %v, want 2", got)
	}
}

// A deadline that passes while a dependency is slow ends the check there: the outbound
// call is cancelled, and the fail-open route does not go on to allow the request.
func TestDeadlineDuringIntrospectionEndsTheCheck(t *testing.T) {
	h, idp, _ := deadlineHarness(t)
	hold := make(chan struct{})
	defer close(hold)
	idp.setHold(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	d := h.engine.Check(ctx, &Request{RouteID: "open", HasRouteID: true, Headers: bearer("slow")})
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the check took %v past a 100ms deadline", took)
	}
	if d.Allowed || d.Reason != ReasonDeadlineExceeded {
		t.Fatalf("allowed %v (%s), reason %s", d.Allowed, d.Outcome, d.Reason)
	}
	if got := counterValue(t, h, "api_gateway_authz_dependency_failures_total", nil); got != 0 {
		t.Fatalf("the deadline counted as %v dependency failures", got)
	}
}

// The gRPC handler hands the call's context (with Envoy's deadline) to the engine: when the
// client gives up, the engine's outbound call is cancelled and the check is abandoned.
func TestGRPCDeadlineReachesTheEngine(t *testing.T) {
	h, idp, _ := deadlineHarness(t)
	hold := make(chan struct{})
	defer close(hold)
	idp.setHold(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	resp, err := h.client.Check(ctx, envoyReq{routeID: rid("open"), headers: bearer("slow")}.build())
	// The server sees the deadline the client sent, so either side may notice it first: the
	// client's own DeadlineExceeded, or the server's 503 answer arriving just before it. An
	// allow (the fail-open route going on without an identity) is the failure.
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
	case err == nil && resp.GetStatus().GetCode() != int32(codes.OK):
	default:
		t.Fatalf("client: %v, answer %v", err, resp.GetStatus())
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if idp.gone.Load() == 1 && counterValue(t, h, "api_gateway_authz_checks_abandoned_total", nil) == 1 {
			return
		}
	}
	t.Fatalf("after the client's deadline: IdP calls cancelled %d, checks abandoned %v", idp.gone.Load(),
		counterValue(t, h, "api_gateway_authz_checks_abandoned_total", nil))
}

// A JWKS fetch cut short by one check's deadline says nothing about the endpoint: the next
// check fetches again instead of failing every token for the refetch interval (30s).
func TestAbandonedJWKSFetchDoesNotFailTheNextCheck(t *testing.T) {
	k := genKey(t, "k1", "RS256")
	hold := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{k.jwk()}})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { once.Do(func() { close(hold) }) })
	h := newHarness(t, Options{})
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()})
	r := &Request{RouteID: "r", HasRouteID: true, Headers: bearer(tok)}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d := h.engine.Check(ctx, r); d.Allowed || d.Reason != ReasonDeadlineExceeded {
		t.Fatalf("the check whose deadline passed mid-fetch: allowed %v, %s", d.Allowed, d.Reason)
	}
	once.Do(func() { close(hold) })
	if d := h.engine.Check(context.Background(), r); !d.Allowed {
		t.Fatalf("the next check, the JWKS endpoint now answering: %s %s", d.Reason, d.Message)
	}
}

// A check does not wait past its deadline behind another check's slow JWKS fetch.
func TestCheckDoesNotWaitPastItsDeadlineForAnotherFetch(t *testing.T) {
	k := genKey(t, "k1", "RS256")
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{k.jwk()}})
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, Options{})
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()})
	r := func() *Request { return &Request{RouteID: "r", HasRouteID: true, Headers: bearer(tok)} }
	first := make(chan *Decision)
	go func() { first <- h.engine.Check(context.Background(), r()) }() // fetches, held
	time.Sleep(50 * time.Millisecond)
	go func() { time.Sleep(3 * time.Second); release() }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	d := h.engine.Check(ctx, r())
	if took := time.Since(start); took > time.Second || d.Reason != ReasonDeadlineExceeded {
		t.Fatalf("behind a held fetch, a check with a 100ms deadline took %v (%s)", took, d.Reason)
	}
	release()
	if d := <-first; !d.Allowed {
		t.Fatalf("the check that fetched: %s", d.Reason)
	}
}

// The same with keys in hand: after a key rotation, a check whose deadline passes while the
// refetch for the new kid is slow (or whose client hangs up on purpose) used to leave the
// keys unrefreshed for the refetch interval (30s), every token of the new key 401
// unknown_key. The fetch is shared work: it completes whoever stops waiting for it.
func TestAbandonedJWKSRefetchStillLoadsRotatedKeys(t *testing.T) {
	k1, k2 := genKey(t, "k1", "RS256"), genKey(t, "k2", "RS256")
	var mu sync.Mutex
	keys := []*signingKey{k1}
	var hold chan struct{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h, ks := hold, keys
		mu.Unlock()
		if h != nil {
			select {
			case <-h:
			case <-r.Context().Done():
				return
			}
		}
		var out []any
		for _, k := range ks {
			out = append(out, k.jwk())
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": out})
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, Options{})
	h.apply(jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL}))
	claims := jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()}
	if d := h.engine.Check(context.Background(), &Request{RouteID: "r", HasRouteID: true, Headers: bearer(k1.sign(t, claims))}); !d.Allowed {
		t.Fatalf("k1 token: %s", d.Reason)
	}
	// The issuer rotates to k2; its endpoint is slow for a moment.
	h.clock.Add(time.Minute)
	release := make(chan struct{})
	mu.Lock()
	keys, hold = []*signingKey{k1, k2}, release
	mu.Unlock()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	r := &Request{RouteID: "r", HasRouteID: true, Headers: bearer(k2.sign(t, claims))}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if d := h.engine.Check(ctx, r); d.Allowed || d.Reason != ReasonDeadlineExceeded || time.Since(start) > time.Second {
		t.Fatalf("the check whose deadline passed mid-refetch: allowed %v, %s after %v", d.Allowed, d.Reason, time.Since(start))
	}
	once.Do(func() { close(release) })
	if d := h.engine.Check(context.Background(), r); !d.Allowed {
		t.Fatalf("the next k2 token, the endpoint answering again: %s %s", d.Reason, d.Message)
	}
}

// fail_open and a deadline that passes while the JWKS fetch is slow: never an allow, for the
// check that started the fetch and for one waiting behind it.
func TestFailOpenRouteNeverAllowsAJWKSCheckPastItsDeadline(t *testing.T) {
	k := genKey(t, "k1", "RS256")
	hold := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(hold) }) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{k.jwk()}})
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, Options{})
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: srv.URL})
	snap.Routes = append(snap.Routes, route("open", func(r *model.Route) { r.Auth = &model.RouteAuth{FailOpen: true} }))
	h.apply(snap)
	tok := k.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "u", "exp": h.clock.Now().Add(time.Hour).Unix()})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if d := h.engine.Check(ctx, &Request{RouteID: "open", HasRouteID: true, Headers: bearer(tok)}); d.Allowed || d.Reason != ReasonDeadlineExceeded {
				t.Errorf("past its deadline on a fail-open route: allowed %v (%s), %s", d.Allowed, d.Outcome, d.Reason)
			}
		}()
	}
	wg.Wait()
	once.Do(func() { close(hold) })
	if d := h.engine.Check(context.Background(), &Request{RouteID: "open", HasRouteID: true, Headers: bearer(tok)}); !d.Allowed || d.Identity.UserID != "u" {
		t.Fatalf("after the endpoint answers: allowed %v (%s), user %q", d.Allowed, d.Outcome, d.Identity.UserID)
	}
}
