package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// TestReservingCachedDenialReportsTrueReset: one instance, requests one at a time, a fixed window of 3
// a minute. The service caches the denial of the 4th request; with reservations the cache
// entry's expiry is capped at 1.25 × hold (service.go respond: "until = min(until,
// now+s.holdCap)"), and a cached denial reports its expiry as the counter's reset
// ("hi.reset, hi.retryAfter = true, st.cached-now, st.cached-now"): the 5th request is told
// duration_until_reset / retry-after 1.25 s although the window ends in 59 s, where the Redis
// store (the same service without reservations) says 59 s. Clients told to come back in 1 s
// come back and are denied again, every 1.25 s, for the rest of the window.
func TestReservingCachedDenialReportsTrueReset(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	d := oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 3, Period: time.Minute})
	plainSvc := newTestService(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, d)
	plainSvc.prefix = "r2cache:p:"
	resSvc := newTestService(t, newReservingStore(t, r.Addr, time.Second, clock), clock, d)
	resSvc.prefix = "r2cache:r:"
	for i := 0; i < 6; i++ {
		clock.Set(base.Add(time.Duration(i) * 100 * time.Millisecond))
		a, err := plainSvc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		b, err := resSvc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("request %d (one at a time, one instance):\nredis     %v\nreserving %v", i+1, a, b)
		}
		if i >= 3 && b.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
			end := time.Unix(base.Unix()-base.Unix()%60+60, 0)
			if got, want := b.Statuses[0].DurationUntilReset.AsDuration(), end.Sub(clock.Now()); got != want {
				t.Errorf("request %d denied, duration_until_reset %v; the window ends in %v", i+1, got, want)
			}
		}
	}
}

// TestReservingNotDeniedLongAfterUnitsBack: the bound "a replica is denied while another holds
// units for at most 1.25 × hold" does not hold through the service's over-limit cache. Replica
// B reserves units at T0 (hold 1s); replica A is denied at T0+1.2s (the counter is full with
// B's units) and caches that denial for holdCap = 1.25s (service.go: "until = min(until,
// now+s.holdCap)"), i.e. until T0+2.45s. B gives its units back at T0+1.25s. At T0+1.5s
// nobody holds units and the counter has room, yet A denies from its cache, until T0+2.45s:
// up to 2.5 × hold after the reservation, 1.25 × hold after the units are back.
func TestReservingNotDeniedLongAfterUnitsBack(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	const limit = 100
	d := oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: limit, Period: time.Minute})
	a := newReservingStore(t, r.Addr, time.Second, clock)
	b := newReservingStore(t, r.Addr, time.Second, clock)
	svcA, svcB := newTestService(t, a, clock, d), newTestService(t, b, clock, d)
	call := func(s *Service) bool {
		t.Helper()
		resp, err := s.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.OverallCode == rlsv3.RateLimitResponse_OK
	}
	held := func(s *ReservingStore) (n uint64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, l := range s.leases {
			n += l.avail
		}
		return n
	}
	// T0: B reserves units.
	for i := 0; held(b) == 0; i++ {
		if i > 50 || !call(svcB) {
			t.Fatal("b holds nothing")
		}
	}
	// T0+1.2s: A takes what is left and is denied (B's units are still held).
	clock.Set(base.Add(1200 * time.Millisecond))
	for i := 0; call(svcA); i++ {
		if i > limit {
			t.Fatal("a never denied")
		}
	}
	// T0+1.25s: B's sweep gives its units back.
	clock.Set(base.Add(1250 * time.Millisecond))
	b.Sweep(clock.Now().UnixMicro())
	if n := held(b); n != 0 {
		t.Fatalf("b still holds %d", n)
	}
	// T0+1.5s: nobody holds units, the counter has room.
	clock.Set(base.Add(1500 * time.Millisecond))
	if !call(svcA) {
		t.Errorf("A denied at T0+1.5s (hold 1s): B's units were given back at T0+1.25s and nobody holds any; A's cached denial lasts until T0+2.45s")
	}
}

// cacheService is a service over store with the given key prefix, with or without the local
// over-limit cache.
func cacheService(t testing.TB, store Store, clock Clock, prefix string, noCache bool, d ir.RateLimitDomain) *Service {
	t.Helper()
	s, err := New(Options{Store: store, Clock: clock, Registerer: prometheus.NewRegistry(), KeyPrefix: prefix, DisableLocalCache: noCache})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := BuildRulesFromDomains(1, []ir.RateLimitDomain{d})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(rules)
	return s
}

// answerString is what a client sees of a response: code, remaining, reset and headers.
func answerString(r *rlsv3.RateLimitResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v", r.OverallCode)
	for _, s := range r.Statuses {
		fmt.Fprintf(&b, " [%v rem=%d reset=%v]", s.Code, s.LimitRemaining, s.DurationUntilReset.AsDuration())
	}
	for _, h := range r.ResponseHeadersToAdd {
		fmt.Fprintf(&b, " %s=%s", h.Key, h.Value)
	}
	return b.String()
}

var allHeaders = ir.RateLimitHeaders{Limit: true, Remaining: true, Reset: true, RetryAfter: true, IETF: true}

// TestCachedDenialAnswersLikeStore: a denial answered from the service's over-limit
// cache (service.go respond, "hi.denied, hi.reset, hi.retryAfter = true, st.cached-now,
// st.cached-now"; hi.remaining left 0) reports remaining 0 and reset = retry-after, whatever
// the store said. The store reports, on the same denial, the remaining capacity (a request of
// cost 4 denied with 2 left: limit_remaining 2) and, for sliding/token/leaky, a reset that is
// not the retry-after (token bucket: time until full; sliding: until the newest hit leaves
// the window; leaky: until the queue drains). So the same request at the same time gets
// different limit_remaining / duration_until_reset / x-ratelimit-remaining /
// x-ratelimit-reset / RateLimit answers depending on whether the cache answered; and with
// reservations the cache is used only a quarter hold, after which the store answers again:
// one replica's answers, one request at a time, differ with and without RATE_LIMIT_RESERVE
// (README: "remaining counts included, are those without reservations").
//
// Each case: three services on one Redis and one clock: "nocache" (the store's truth),
// "plain" (Redis store with the cache) and "reserving" (hold 1s: cache used 250ms at most).
func TestCachedDenialAnswersLikeStore(t *testing.T) {
	compareCachedDenials(t, []denialCase{
		{"sliding", ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 3, Period: time.Minute}, 1},
		{"token", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Minute}, 1},
		{"leaky", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 3, Period: time.Minute, Burst: 3}, 1},
	})
}

// TestCachedDenialFixedMatchesStore: for fixed windows (cost 1 and cost 4, denied
// with units left) a cached denial answers as the store does, with and without reservations.
func TestCachedDenialFixedMatchesStore(t *testing.T) {
	compareCachedDenials(t, []denialCase{
		{"fixed1", ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 3, Period: time.Minute}, 1},
		{"fixed4", ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 10, Period: time.Minute}, 4},
	})
}

type denialCase struct {
	name string
	rule ir.RateLimitRule
	cost uint32
}

func compareCachedDenials(t *testing.T, cases []denialCase) {
	r := itest.StartRedis(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(base)
			d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
				Key: "k", Name: "lim", Limits: []ir.RateLimitRule{tc.rule}, Headers: allHeaders,
			}}}
			p := "cache:" + tc.name + ":"
			truth := cacheService(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, p+"n:", true, d)
			plain := cacheService(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, p+"p:", false, d)
			res := cacheService(t, newReservingStore(t, r.Addr, time.Second, clock), clock, p+"r:", false, d)
			ask := func(s *Service) string {
				q := req("test", []string{"k", "v"})
				q.HitsAddend = tc.cost
				resp, err := s.ShouldRateLimit(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				return answerString(resp)
			}
			// Requests at 0, 100ms, 200ms, … 1s (the first ones admitted, then denials: the
			// first from the store, the next from the cache).
			for i := 0; i <= 10; i++ {
				clock.Set(base.Add(time.Duration(i) * 100 * time.Millisecond))
				want, a, b := ask(truth), ask(plain), ask(res)
				if a != want || b != want {
					t.Errorf("t=%v:\n  store     %s\n  plain     %s\n  reserving %s", clock.Now().Sub(base), want, a, b)
				}
			}
		})
	}
}

// costStep is one request of a cache comparison: at base+at, with cost.
type costStep struct {
	at   time.Duration
	cost uint32
}

// compareWithStore runs steps against three services on one Redis and one clock, with one limit:
// "truth" (no over-limit cache), "plain" (Redis store with the cache) and "reserving" (hold
// 1s, with the cache); every answer (code, remaining, reset, every header) must be the truth's.
func compareWithStore(t *testing.T, addr, prefix string, rule ir.RateLimitRule, shadow bool, steps []costStep) {
	t.Helper()
	clock := newFakeClock(base)
	d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
		Key: "k", Name: "lim", Limits: []ir.RateLimitRule{rule}, Headers: allHeaders, ShadowMode: shadow,
	}}}
	truth := cacheService(t, redisStoreFor(t, mustClient(t, addr)), clock, prefix+"n:", true, d)
	plain := cacheService(t, redisStoreFor(t, mustClient(t, addr)), clock, prefix+"p:", false, d)
	res := cacheService(t, newReservingStore(t, addr, time.Second, clock), clock, prefix+"r:", false, d)
	ask := func(s *Service, cost uint32) string {
		q := req("test", []string{"k", "v"})
		q.HitsAddend = cost
		resp, err := s.ShouldRateLimit(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		return answerString(resp)
	}
	for i, st := range steps {
		clock.Set(base.Add(st.at))
		want, a, b := ask(truth, st.cost), ask(plain, st.cost), ask(res, st.cost)
		if a != want || b != want {
			t.Errorf("step %d (t=%v cost %d):\n  store     %s\n  plain     %s\n  reserving %s", i, st.at, st.cost, want, a, b)
		}
	}
}

// TestCachedDenialCostOverLimit: service.go respond reports a cached denial's
// reset as "max(st.cachedRs, st.cached)-now", i.e. never earlier than the retry-after. But the
// store's reset is earlier than its retry-after whenever the cost exceeds the limit (the
// request can never pass): sliding window (RetryAfter = Period, Reset = until the newest hit
// leaves), token bucket (RetryAfter = need-balance > capacity-balance = Reset), leaky bucket
// (RetryAfter = newTAT-tau-now > TAT-now = Reset). So the same request at the same time gets
// duration_until_reset / x-ratelimit-reset / RateLimit t= of the retry-after from the cache,
// and the true reset from the store (e.g. sliding 3/min, one hit at 0, cost 5 at 10s and
// 10.1s: the store says reset 50s both times, the cache says 60s the second time).
func TestCachedDenialCostOverLimit(t *testing.T) {
	r := itest.StartRedis(t)
	steps := []costStep{{0, 1}, {10 * time.Second, 5}, {10*time.Second + 100*time.Millisecond, 5}, {20 * time.Second, 5}}
	for _, tc := range []struct {
		name string
		rule ir.RateLimitRule
	}{
		{"sliding", ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 3, Period: time.Minute}},
		{"token", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Minute}},
		{"leaky", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 3, Period: time.Minute, Burst: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compareWithStore(t, r.Addr, "over:"+tc.name+":", tc.rule, false, steps)
		})
	}
}

// TestCachedDenialAfterSmallerCost: the over-limit cache keeps one entry per
// counter (overCache.put overwrites it, overCache.denied uses it for any cost >= e.cost) and
// nothing drops it when the store admits a smaller request. Its until (retry-after) and its
// reset are what the store said at the denial; then:
//   - "admitted": cost 5 is denied (entry: cost 5), a cost 2 request goes to the store and is
//     admitted (the counter's retry-after and reset for cost 5 move later), the next cost 5
//     request is answered from the cache with the old retry-after and reset (token 10/min:
//     retry-after 18 and reset 48 instead of 30 and 60);
//   - "overwritten": cost 5 is denied, then cost 2 is denied too and its entry replaces cost
//     5's; the next cost 5 request is answered with cost 2's retry-after (6s instead of 24s).
//
// Codes agree (nothing but time makes a counter admit earlier); remaining agrees (0); the
// retry-after / x-ratelimit-reset / duration_until_reset / RateLimit t= headers do not.
func TestCachedDenialAfterSmallerCost(t *testing.T) {
	r := itest.StartRedis(t)
	for _, tc := range []struct {
		name  string
		rule  ir.RateLimitRule
		steps []costStep
	}{
		{"token/admitted", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute},
			[]costStep{{0, 8}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}}},
		{"sliding/admitted", ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 10, Period: time.Minute},
			[]costStep{{0, 8}, {time.Second, 5}, {2 * time.Second, 2}, {3 * time.Second, 5}}},
		{"leaky/admitted", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Minute, Burst: 10},
			[]costStep{{0, 8}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}}},
		{"token/overwritten", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute},
			[]costStep{{0, 9}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compareWithStore(t, r.Addr, "small:"+tc.name+":", tc.rule, false, tc.steps)
		})
	}
}

// TestCachedDenialFixedAndShadow: what agrees: fixed windows (cost 1, cost > 1 then
// smaller, cost over the limit) and shadow mode, with and without reservations.
func TestCachedDenialFixedAndShadow(t *testing.T) {
	r := itest.StartRedis(t)
	fixed := ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 10, Period: time.Minute}
	steps := []costStep{{0, 8}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}, {200 * time.Millisecond, 1},
		{300 * time.Millisecond, 20}, {400 * time.Millisecond, 20}, {600 * time.Millisecond, 5}}
	t.Run("fixed", func(t *testing.T) { compareWithStore(t, r.Addr, "fx:", fixed, false, steps) })
	t.Run("fixed-shadow", func(t *testing.T) { compareWithStore(t, r.Addr, "fxs:", fixed, true, steps) })
	tok := ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Minute}
	t.Run("token-shadow", func(t *testing.T) {
		compareWithStore(t, r.Addr, "tks:", tok, true, []costStep{{0, 1}, {0, 1}, {0, 1}, {0, 1}, {time.Second, 1}})
	})
}

// TestCachedDenialCostOverBurst: service.go respond caches a denial only when
// "st.cost <= st.checks[pick].Limit", i.e. it compares the cost with the rule's requests.
// But what a token or leaky bucket can ever admit at once is its burst (capacity =
// Burst × T1), not its requests: a leaky bucket's burst is 1 by default (rules.go
// compileRule), and a token bucket may be configured with a burst below its requests. A
// cost between the burst and the requests never passes, exactly like the costs over the
// limit, which are not cached for the same reason: a cached answer would be wrong,
// the store's retry-after stops shrinking once the bucket is full / the queue has drained
// (token: need - capacity; leaky: cost×T1 - tau), the cached one keeps counting down to 0.
//
//   - leaky 3/min (T1 = 20s, burst 1): cost 1 at 0 (admitted, TAT 20s), cost 2 at 1s
//     (denied, retry-after 39s, cached until 40s), cost 2 at 25s: the store says
//     retry-after 20, the cache 15.
//   - token 10/min burst 2 (T1 = 6s, capacity 12s): cost 3 at 0 (denied, retry-after 6s),
//     cost 3 at 3s: the store says retry-after 6, the cache 3.
func TestCachedDenialCostOverBurst(t *testing.T) {
	r := itest.StartRedis(t)
	for _, tc := range []struct {
		name  string
		rule  ir.RateLimitRule
		steps []costStep
	}{
		{"leaky-default-burst", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 3, Period: time.Minute},
			[]costStep{{0, 1}, {time.Second, 2}, {25 * time.Second, 2}}},
		{"token-burst-below-requests", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute, Burst: 2},
			[]costStep{{0, 3}, {3 * time.Second, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compareWithStore(t, r.Addr, "burst:"+tc.name+":", tc.rule, false, tc.steps)
		})
	}
}

// pipelinesSent is the number of pipelines s has sent.
func pipelinesSent(s *RedisStore) uint64 {
	n := uint64(0)
	for _, v := range s.BatchSizes() {
		n += v
	}
	return n
}

// TestCachedDenialZeroLimitFlood: a denial whose cost is above the limit is not cached for
// sliding windows and buckets (cacheable), whose retry-after for it stops shrinking. For a fixed window the cached answer of such a denial is exact (the store says
// retry-after = reset = the window's end, and overCache serves fixed entries to the window
// end), so nothing is gained; but a rule of "requests: 0" (deny everything, compiled to a
// fixed window of limit 0, rules.go compileRule) has every cost above its limit: under a
// steady flood of cost-1 requests every single one would go to Redis if fixed windows were
// treated alike: their first denial is cached to the window's end. Here: 50 requests at one instant on a requests-0
// rule send 50 pipelines; the same flood on a limit-1 rule sends 2.
func TestCachedDenialZeroLimitFlood(t *testing.T) {
	r := itest.StartRedis(t)
	for _, tc := range []struct {
		name     string
		requests uint64
	}{{"limit1", 1}, {"limit0", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(base)
			st := redisStoreFor(t, mustClient(t, r.Addr))
			d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
				Key: "k", Name: "lim", Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: tc.requests, Period: time.Minute}},
			}}}
			svc := cacheService(t, st, clock, "zero:"+tc.name+":", false, d)
			denied := 0
			for i := 0; i < 50; i++ {
				resp, err := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
				if err != nil {
					t.Fatal(err)
				}
				if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
					denied++
				}
			}
			if want := 50 - int(tc.requests); denied != want {
				t.Fatalf("denied %d, want %d", denied, want)
			}
			if p := pipelinesSent(st); p > 2 {
				t.Errorf("a steady flood of cost-1 requests over a %d-request fixed window sent %d pipelines to Redis (want at most 2: the first denial is cached to the window's end)", tc.requests, p)
			}
		})
	}
}

// TestCachedDenialLimitRaise: a fixed-window entry of the over-limit cache
// is used for any cost at least its own until the window ends (overCache.denied, "e.fixed &&
// cost >= e.cost"), and the entry does not record the limit it was denied under. A fixed
// window's key carries only its period (rules.go compileRule, ":f"+period), so after the
// limit is raised (SetRules; or a descriptor limit override of the same unit) the same key
// is checked against the new limit, and the cache keeps denying with the old one until the
// window ends (a day for a calendar quota): 1/min, two requests (the second denied and
// cached), the limit raised to 100/min: the store admits the third request, the cache denies
// it.
func TestCachedDenialLimitRaise(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	dom := func(n uint64) ir.RateLimitDomain {
		return ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
			Key: "k", Name: "lim", Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: n, Period: time.Minute}}, Headers: allHeaders,
		}}}
	}
	truth := cacheService(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, "raise:n:", true, dom(1))
	plain := cacheService(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, "raise:p:", false, dom(1))
	ask := func(s *Service) string {
		resp, err := s.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		return answerString(resp)
	}
	for i := 0; i < 2; i++ {
		clock.Set(base.Add(time.Duration(i) * time.Second))
		ask(truth)
		ask(plain)
	}
	rules, err := BuildRulesFromDomains(2, []ir.RateLimitDomain{dom(100)})
	if err != nil {
		t.Fatal(err)
	}
	truth.SetRules(rules)
	plain.SetRules(rules)
	clock.Set(base.Add(3 * time.Second))
	if want, got := ask(truth), ask(plain); got != want {
		t.Errorf("after raising the limit to 100/min:\n  store %s\n  cache %s", want, got)
	}
}
