package extauthz

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// introHarness: an engine whose settings introspect at a real HTTP endpoint, with one
// fail-closed route and one fail-open route.
func introHarness(t *testing.T, in model.Introspection, auth func(*model.AuthSettings)) (*harness, *idpServer) {
	idp := newIDPServer(t)
	h := newHarness(t, Options{})
	in.URL = idp.URL
	a := &model.AuthSettings{Introspection: &in}
	if auth != nil {
		auth(a)
	}
	h.apply(&model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID, Auth: a},
		Routes: []*model.Route{route("closed", nil), route("open", func(r *model.Route) { r.Auth = &model.RouteAuth{FailOpen: true} })}})
	return h, idp
}

// A bearer token longer than the limit is refused before any work: no introspection call,
// no JWT parsing, no cache entry. 50 KB tokens used to cost one outbound call each.
func TestOversizedBearerTokenRefusedBeforeAnyWork(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{}, nil)
	huge := strings.Repeat("A", 50<<10)
	for _, c := range []struct{ name, tok string }{
		{"opaque 50 KB", huge},
		{"JWT-shaped 50 KB", huge[:20<<10] + "." + huge[:20<<10] + "." + huge[:10<<10]},
		{"one byte over the default 8 KiB", strings.Repeat("b", 8<<10+1)},
	} {
		resp := h.check(envoyReq{routeID: rid("closed"), headers: bearer(c.tok)})
		if httpStatus(resp) != 401 || errCode(t, resp) != ReasonInvalidToken {
			t.Errorf("%s: status %d %s", c.name, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
		// fail_open is for dependencies, not for bad credentials.
		if got := httpStatus(h.check(envoyReq{routeID: rid("open"), headers: bearer(c.tok)})); got != 401 {
			t.Errorf("%s on a fail-open route: status %d", c.name, got)
		}
	}
	if n := idp.calls.Load(); n != 0 {
		t.Fatalf("oversized tokens caused %d introspection calls", n)
	}
	// At the limit, the token is introspected as usual.
	idp.add(strings.Repeat("c", 8<<10), map[string]any{"sub": "u"})
	if got := httpStatus(h.check(envoyReq{routeID: rid("closed"), headers: bearer(strings.Repeat("c", 8<<10))})); got != 200 {
		t.Fatalf("a token of exactly 8 KiB: status %d", got)
	}
	// The limit is a setting.
	h2, idp2 := introHarness(t, model.Introspection{}, func(a *model.AuthSettings) { a.MaxTokenBytes = 64 })
	idp2.add(strings.Repeat("d", 65), map[string]any{"sub": "u"})
	if got := httpStatus(h2.check(envoyReq{routeID: rid("closed"), headers: bearer(strings.Repeat("d", 65))})); got != 401 {
		t.Fatalf("max_token_bytes 64, a 65-byte token: status %d", got)
	}
	if idp2.calls.Load() != 0 {
		t.Fatal("a token over max_token_bytes was introspected")
	}
}

// Distinct unknown tokens from an unauthenticated caller cost at most max_calls_per_second
// outbound calls per second; the excess is denied 503 (fail-open routes too) and counted.
func TestIntrospectionCallsAreCapped(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{MaxCallsPerSecond: 20}, nil)
	deny503, open503 := 0, 0
	for i := 0; i < 100; i++ {
		resp := h.check(envoyReq{routeID: rid("closed"), headers: bearer(fmt.Sprintf("junk-%d", i))})
		switch {
		case httpStatus(resp) == 401 && errCode(t, resp) == ReasonTokenInactive:
		case httpStatus(resp) == 503 && errCode(t, resp) == ReasonAuthUnavailable:
			deny503++
		default:
			t.Fatalf("junk-%d: status %d %s", i, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
	for i := 0; i < 10; i++ {
		resp := h.check(envoyReq{routeID: rid("open"), headers: bearer(fmt.Sprintf("more-junk-%d", i))})
		if httpStatus(resp) == 503 && errCode(t, resp) == ReasonAuthUnavailable {
			open503++
		}
	}
	if n := idp.calls.Load(); n != 20 {
		t.Fatalf("%d introspection calls in one second, want 20", n)
	}
	if deny503 != 80 || open503 != 10 {
		t.Fatalf("throttled: %d fail-closed 503s (want 80), %d fail-open route 503s (want 10)", deny503, open503)
	}
	if got := counterValue(t, h, "api_gateway_authz_introspection_throttled_total", nil); got != 90 {
		t.Fatalf("throttled metric %v, want 90", got)
	}
	// The budget refills with time.
	h.clock.Add(time.Second)
	h.check(envoyReq{routeID: rid("closed"), headers: bearer("after-a-second")})
	if n := idp.calls.Load(); n != 21 {
		t.Fatalf("after a second: %d calls, want 21", n)
	}
}

// 4,000 distinct maximum-size tokens (the reported attack, within the token limit) neither
// make 4,000 outbound calls nor keep their bytes: the cache is bounded in bytes and keyed by
// a digest, so the heap does not grow with the tokens sent.
func TestIntrospectionFloodKeepsMemoryBounded(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{}, nil)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n, workers = 4000, 8
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				tok := fmt.Sprintf("%08d", i) + strings.Repeat("x", 8<<10-8)
				resp, err := h.client.Check(t.Context(), envoyReq{routeID: rid("closed"), headers: bearer(tok)}.build())
				if err != nil || httpStatus(resp) == 200 {
					t.Errorf("token %d: %v status %d", i, err, httpStatus(resp))
					return
				}
			}
		}(w)
	}
	wg.Wait()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if c := idp.calls.Load(); c > 50 {
		t.Fatalf("%d distinct tokens made %d introspection calls, want at most 50 (the default per second)", n, c)
	}
	if b := h.engine.intro.size(); b > 16<<20 {
		t.Fatalf("introspection cache holds %d bytes", b)
	}
	// 4,000 × 8 KiB = 32 MiB were sent; none of it may be retained.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
}

// The cache's byte bound holds with large answers, and evicts the least recently used.
func TestIntrospectionCacheIsBoundedInBytes(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{CacheBytes: 256 << 10, MaxCallsPerSecond: 10000}, nil)
	groups := make([]string, 200)
	for i := range groups {
		groups[i] = fmt.Sprintf("group-%04d", i)
	}
	for i := 0; i < 300; i++ {
		idp.add(fmt.Sprintf("tok-%d", i), map[string]any{"sub": fmt.Sprintf("u%d", i), "groups": groups})
	}
	hot := bearer("tok-0")
	for i := 0; i < 300; i++ {
		if got := httpStatus(h.check(envoyReq{routeID: rid("closed"), headers: bearer(fmt.Sprintf("tok-%d", i))})); got != 200 {
			t.Fatalf("tok-%d: status %d", i, got)
		}
		h.check(envoyReq{routeID: rid("closed"), headers: hot}) // kept recently used
		if b := h.engine.intro.size(); b > 256<<10 {
			t.Fatalf("after %d tokens the cache holds %d bytes, over 256 KiB", i+1, b)
		}
	}
	if n := idp.calls.Load(); n != 300 {
		t.Fatalf("%d calls, want 300 (the hot token once)", n)
	}
	// The oldest cold token was evicted: asked again.
	h.check(envoyReq{routeID: rid("closed"), headers: bearer("tok-1")})
	if n := idp.calls.Load(); n != 301 {
		t.Fatalf("an evicted token was not asked again (%d calls)", n)
	}
}

// Inactive answers are remembered only briefly (they would fill the cache with an
// attacker's junk); active ones until exp, at most cache_ttl.
func TestInactiveTokensAreCachedBriefly(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{}, nil)
	for i := 0; i < 2; i++ {
		if got := httpStatus(h.check(envoyReq{routeID: rid("closed"), headers: bearer("unknown")})); got != 401 {
			t.Fatalf("status %d", got)
		}
	}
	if n := idp.calls.Load(); n != 1 {
		t.Fatalf("the inactive answer was not cached: %d calls", n)
	}
	h.clock.Add(negativeIntrospectionTTL + time.Second)
	h.check(envoyReq{routeID: rid("closed"), headers: bearer("unknown")})
	if n := idp.calls.Load(); n != 2 {
		t.Fatalf("the inactive answer was kept past %v: %d calls", negativeIntrospectionTTL, n)
	}
}

// Concurrent callers with the same uncached token share one outbound call.
func TestConcurrentCallersShareOneIntrospection(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{}, nil)
	idp.add("popular", map[string]any{"sub": "u"})
	hold := make(chan struct{})
	idp.setHold(hold)
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.client.Check(t.Context(), envoyReq{routeID: rid("closed"), headers: bearer("popular")}.build())
			if err != nil {
				t.Error(err)
				return
			}
			statuses <- httpStatus(resp)
		}()
	}
	// Let the callers pile up on the held call, then answer it.
	for deadline := time.Now().Add(5 * time.Second); idp.calls.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(hold)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	if n := idp.calls.Load(); n != 1 {
		t.Fatalf("20 concurrent callers made %d calls", n)
	}
}

// A flood of junk tokens does not evict or slow a valid token already answered: it is
// served from the cache with no new call, whatever the junk did to the call budget.
func TestJunkFloodDoesNotAffectCachedToken(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{MaxCallsPerSecond: 5}, nil)
	idp.add("good", map[string]any{"sub": "alice"})
	if got := httpStatus(h.check(envoyReq{routeID: rid("closed"), headers: bearer("good")})); got != 200 {
		t.Fatalf("good: %d", got)
	}
	for i := 0; i < 200; i++ {
		h.check(envoyReq{routeID: rid("closed"), headers: bearer(fmt.Sprintf("junk-%d", i))})
	}
	calls := idp.calls.Load()
	resp := h.check(envoyReq{routeID: rid("closed"), headers: bearer("good")})
	if httpStatus(resp) != 200 || okHeaders(resp)["x-user-id"] != "alice" || idp.calls.Load() != calls {
		t.Fatalf("good after the flood: status %d, calls %d→%d", httpStatus(resp), calls, idp.calls.Load())
	}
}

// A caller who gives up (Envoy cancels the check when its client disconnects) while its
// introspection call is shared does not fail the others waiting on that call: one of them
// makes the call again under its own deadline.
func TestCallerWhoGivesUpDoesNotFailOthersWithTheSameToken(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{}, nil)
	idp.add("shared", map[string]any{"sub": "u"})
	hold := make(chan struct{})
	idp.setHold(hold)
	req := func() *Request { return &Request{RouteID: "closed", HasRouteID: true, Headers: bearer("shared")} }
	quitter, quit := context.WithCancel(context.Background())
	first := make(chan *Decision)
	go func() { first <- h.engine.Check(quitter, req()) }()
	waitFor(t, func() bool { return idp.calls.Load() == 1 })
	second := make(chan *Decision)
	go func() { second <- h.engine.Check(context.Background(), req()) }()
	time.Sleep(50 * time.Millisecond) // the second caller is now waiting on the first's call
	quit()
	if d := <-first; d.Allowed {
		t.Fatal("the caller who gave up was allowed")
	}
	waitFor(t, func() bool { return idp.calls.Load() == 2 })
	close(hold)
	if d := <-second; !d.Allowed {
		t.Fatalf("the caller still waiting: %s %s", d.Reason, d.Message)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("timed out")
		}
	}
}

// fail_open is for an identity provider that is down, not for a budget an anonymous caller
// spends at will: after a handful of junk tokens, a junk token on a fail-open route used to
// be let through (anonymous, but past a route that requires credentials). A throttled check
// is a 503 whatever the route's fail mode; an outage of the endpoint still fails open.
func TestThrottledIntrospectionNeverFailsOpen(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{MaxCallsPerSecond: 3}, nil)
	for i := 0; i < 3; i++ {
		if got := httpStatus(h.check(envoyReq{routeID: rid("open"), headers: bearer(fmt.Sprintf("junk-%d", i))})); got != 401 {
			t.Fatalf("junk-%d within the budget: status %d", i, got)
		}
	}
	for i := 3; i < 10; i++ {
		resp := h.check(envoyReq{routeID: rid("open"), headers: bearer(fmt.Sprintf("junk-%d", i))})
		if httpStatus(resp) != 503 || errCode(t, resp) != ReasonAuthUnavailable {
			t.Fatalf("junk-%d over the budget on a fail-open route: status %d %s", i, httpStatus(resp), resp.GetDeniedResponse().GetBody())
		}
	}
	if n := idp.calls.Load(); n != 3 {
		t.Fatalf("%d introspection calls, want 3", n)
	}
	// The endpoint down (not the budget) still fails open.
	h.clock.Add(time.Second)
	idp.Close()
	if got := httpStatus(h.check(envoyReq{routeID: rid("open"), headers: bearer("while-down")})); got != 200 {
		t.Fatalf("introspection down on a fail-open route: status %d", got)
	}
}

// A small cache_bytes (4 KiB, under an eighth of which no answer fits) used to cache nothing
// at all, silently: every check of every token was an outbound call, and the call budget
// then refused everyone. Settings refuse such a value, and the cache holds at least
// minIntrospectionBytes whatever it is given.
func TestSmallIntrospectionCacheStillCaches(t *testing.T) {
	in := model.Introspection{URL: "https://idp.example.com/introspect", CacheBytes: 4096}
	s := &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{Introspection: &in}}
	if errs := s.Validate(); len(errs) == 0 {
		t.Error("cache_bytes 4096 accepted")
	}
	h, idp := introHarness(t, model.Introspection{CacheBytes: 4096}, nil)
	idp.add("good", map[string]any{"sub": "alice", "scope": "read"})
	for i := 0; i < 5; i++ {
		if got := httpStatus(h.check(envoyReq{routeID: rid("closed"), headers: bearer("good")})); got != 200 {
			t.Fatalf("check %d: status %d", i, got)
		}
	}
	if n := idp.calls.Load(); n != 1 {
		t.Fatalf("%d introspection calls for one token, want 1", n)
	}
}

// Many callers with many tokens, a cache small enough to evict all the time, shared calls,
// callers giving up mid-call: every answer is its own token's (its user), never another's.
func TestConcurrentIntrospectionAnswersStayWithTheirToken(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{CacheBytes: 64 << 10, MaxCallsPerSecond: 1 << 30}, nil)
	const tokens, workers, rounds = 64, 16, 40
	for i := 0; i < tokens; i++ {
		idp.add(fmt.Sprintf("tok-%d", i), map[string]any{"sub": fmt.Sprintf("user-%d", i), "pad": strings.Repeat("p", 2000)})
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; n < rounds; n++ {
				i := (w*7 + n*13) % tokens
				ctx := context.Background()
				var cancel context.CancelFunc = func() {}
				if n%5 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(n%3)*time.Millisecond)
				}
				d := h.engine.Check(ctx, &Request{RouteID: "closed", HasRouteID: true, Headers: bearer(fmt.Sprintf("tok-%d", i))})
				cancel()
				if d.Allowed && d.Identity.UserID != fmt.Sprintf("user-%d", i) {
					t.Errorf("tok-%d answered as %q", i, d.Identity.UserID)
					return
				}
				if !d.Allowed && d.Reason != ReasonDeadlineExceeded {
					t.Errorf("tok-%d: %s", i, d.Reason)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if b := h.engine.intro.size(); b > 64<<10 || b < 0 {
		t.Fatalf("cache holds %d bytes", b)
	}
}

// A wall clock stepped back (an injected clock without a monotonic reading, or NTP under
// one) used to stop the call budget refilling until the clock had caught up with its last
// reading: an hour back, an hour of 503s for every new token.
func TestIntrospectionBudgetRefillsAfterTheClockGoesBack(t *testing.T) {
	h, idp := introHarness(t, model.Introspection{MaxCallsPerSecond: 2}, nil)
	for i := 0; i < 3; i++ {
		h.check(envoyReq{routeID: rid("closed"), headers: bearer(fmt.Sprintf("a-%d", i))})
	}
	if n := idp.calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	h.clock.Add(-time.Hour)
	h.check(envoyReq{routeID: rid("closed"), headers: bearer("b-0")}) // still spent: no call
	h.clock.Add(time.Second)
	if got := httpStatus(h.check(envoyReq{routeID: rid("closed"), headers: bearer("b-1")})); got != 401 {
		t.Fatalf("a second after the clock went back an hour: status %d, want 401 (asked, inactive)", got)
	}
	if n := idp.calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
}
