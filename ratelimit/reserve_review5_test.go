package ratelimit

// Fifth adversarial review, of e0a65be (cached denials used for the same cost only — any
// larger for fixed windows —, entries of another cost dropped, costs over the limit not
// cached; the leader with Window > 0 hands off; late give-backs waited for by Close; a
// request's own give-back on a tracked goroutine). Each test broke e0a65be (its comment tells
// how) and guards the fix. Every test runs against a real redis-server.

import (
	"context"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// TestCachedDenialCostOverBurst: service.go respond caches a denial only when
// "st.cost <= st.checks[pick].Limit", i.e. it compares the cost with the rule's requests.
// But what a token or leaky bucket can ever admit at once is its burst (capacity =
// Burst × T1), not its requests: a leaky bucket's burst is 1 by default (rules.go
// compileRule), and a token bucket may be configured with a burst below its requests. A
// cost between the burst and the requests never passes, exactly like the costs over the
// limit that e0a65be stopped caching, and for the same reason the cache answers it wrongly:
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
		steps []r4Step
	}{
		{"leaky-default-burst", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 3, Period: time.Minute},
			[]r4Step{{0, 1}, {time.Second, 2}, {25 * time.Second, 2}}},
		{"token-burst-below-requests", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute, Burst: 2},
			[]r4Step{{0, 3}, {3 * time.Second, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r4Compare(t, r.Addr, "r5burst:"+tc.name+":", tc.rule, false, tc.steps)
		})
	}
}

// r5Pipelines is the number of pipelines s has sent.
func r5Pipelines(s *RedisStore) uint64 {
	n := uint64(0)
	for _, v := range s.BatchSizes() {
		n += v
	}
	return n
}

// TestCachedDenialZeroLimitFlood: e0a65be no longer caches a denial whose cost is
// above the limit (service.go respond, "st.cost <= st.checks[pick].Limit"), for every
// algorithm. For a fixed window the cached answer of such a denial is exact (the store says
// retry-after = reset = the window's end, and overCache serves fixed entries to the window
// end), so nothing is gained; but a rule of "requests: 0" (deny everything, compiled to a
// fixed window of limit 0, rules.go compileRule) has every cost above its limit: under a
// steady flood of cost-1 requests every single one goes to Redis (before e0a65be the first
// denial was cached to the window's end). Here: 50 requests at one instant on a requests-0
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
			svc := r3Service(t, st, clock, "r5zero:"+tc.name+":", false, d)
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
			if p := r5Pipelines(st); p > 2 {
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
	truth := r3Service(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, "r5raise:n:", true, dom(1))
	plain := r3Service(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, "r5raise:p:", false, dom(1))
	ask := func(s *Service) string {
		resp, err := s.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		return r3Answer(resp)
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
