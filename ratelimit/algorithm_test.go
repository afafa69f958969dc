package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/api-gateway/api-gateway/ir"
)

type step struct {
	at        time.Duration // after base
	ok        bool
	remaining uint32 // checked when ok
}

type algCase struct {
	name  string
	rule  ir.RateLimitRule
	start time.Time
	steps []step
}

var ms = time.Millisecond

func algCases() []algCase {
	dayEnd := time.Date(2025, 3, 31, 23, 59, 59, 0, time.UTC)
	return []algCase{
		{name: "fixed_window", rule: ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 3, Period: time.Second}, start: base,
			steps: []step{{0, true, 2}, {100 * ms, true, 1}, {200 * ms, true, 0}, {300 * ms, false, 0}, {999 * ms, false, 0},
				{1000 * ms, true, 2}, {1001 * ms, true, 1}, {1999 * ms, true, 0}, {1999 * ms, false, 0}, {2000 * ms, true, 2}}},
		{name: "fixed_window_90s", rule: ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 1, Period: 90 * time.Second}, start: time.Unix(1_700_000_010, 0),
			// 1_700_000_010 is 0 mod 90: windows start there.
			steps: []step{{0, true, 0}, {89 * time.Second, false, 0}, {90 * time.Second, true, 0}, {179 * time.Second, false, 0}}},
		{name: "sliding_window", rule: ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 3, Period: time.Second}, start: base,
			// Buckets of 50 ms (1 s / slidingBuckets): a request counts until its bucket has
			// left the window, at most 50 ms longer than an exact log would count it.
			steps: []step{{0, true, 2}, {100 * ms, true, 1}, {900 * ms, true, 0}, {950 * ms, false, 0},
				{1000 * ms, false, 0}, // the request at 0 is out of the window, its bucket [0, 50ms) not yet
				{1050 * ms, true, 0}, {1100 * ms, false, 0}, {1149 * ms, false, 0}, {1150 * ms, true, 0},
				{1900 * ms, false, 0}, {1950 * ms, true, 0}, {1999 * ms, false, 0}}},
		{name: "token_bucket", rule: ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Second, Burst: 3}, start: base,
			steps: []step{{0, true, 2}, {0, true, 1}, {0, true, 0}, {0, false, 0}, {99 * ms, false, 0}, {100 * ms, true, 0},
				{100 * ms, false, 0}, {350 * ms, true, 1}, {350 * ms, true, 0}, {350 * ms, false, 0}, {10 * time.Second, true, 2}}},
		{name: "token_bucket_default_burst", rule: ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 2, Period: time.Minute, Burst: 2}, start: base,
			steps: []step{{0, true, 1}, {time.Second, true, 0}, {2 * time.Second, false, 0}, {30 * time.Second, true, 0}, {31 * time.Second, false, 0}}},
		{name: "leaky_bucket", rule: ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Second, Burst: 1}, start: base,
			steps: []step{{0, true, 0}, {0, false, 0}, {50 * ms, false, 0}, {100 * ms, true, 0}, {150 * ms, false, 0}, {200 * ms, true, 0}, {450 * ms, true, 0}}},
		{name: "leaky_bucket_burst", rule: ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Second, Burst: 3}, start: base,
			steps: []step{{0, true, 2}, {0, true, 1}, {0, true, 0}, {0, false, 0}, {100 * ms, true, 0}, {100 * ms, false, 0}, {time.Second, true, 2}}},
		{name: "quota_day", rule: ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 2, Calendar: ir.CalendarDay}, start: dayEnd,
			steps: []step{{0, true, 1}, {0, true, 0}, {999 * ms, false, 0}, {time.Second, true, 1}, {24*time.Hour - time.Millisecond, true, 0}, {24 * time.Hour, false, 0}, {24*time.Hour + time.Second, true, 1}}},
		{name: "quota_month", rule: ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 1, Calendar: ir.CalendarMonth}, start: dayEnd,
			steps: []step{{0, true, 0}, {500 * ms, false, 0}, {time.Second, true, 0}, {29 * 24 * time.Hour, false, 0}, {30*24*time.Hour + time.Second, true, 0}}},
	}
}

func TestAlgorithms(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		store := newTestStore(t, kind)
		for _, tc := range algCases() {
			t.Run(string(kind)+"/"+tc.name, func(t *testing.T) {
				clock := newFakeClock(tc.start)
				svc := newTestService(t, store, clock, oneRuleDomain(tc.rule))
				svc.prefix = "t:" + tc.name + ":" // fresh counters per case on the shared store
				for i, st := range tc.steps {
					clock.Set(tc.start.Add(st.at))
					resp, err := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
					if err != nil {
						t.Fatal(err)
					}
					ok := resp.OverallCode == rlsv3.RateLimitResponse_OK
					if ok != st.ok {
						t.Fatalf("step %d at +%v: ok=%v, want %v (%v)", i, st.at, ok, st.ok, resp.Statuses[0])
					}
					if ok && resp.Statuses[0].LimitRemaining != st.remaining {
						t.Fatalf("step %d at +%v: remaining %d, want %d", i, st.at, resp.Statuses[0].LimitRemaining, st.remaining)
					}
				}
			})
		}
	}
}

// TestSlidingWindowNeverExceeds replays random request times and checks that no window of
// the period's length ever holds more admitted requests than the limit, and that the memory
// and Redis stores take the same decisions.
func TestSlidingWindowNeverExceeds(t *testing.T) {
	const limit = 5
	period := time.Second
	rng := rand.New(rand.NewSource(7))
	var times []time.Duration
	at := time.Duration(0)
	for i := 0; i < 400; i++ {
		at += time.Duration(rng.Intn(120)) * ms
		times = append(times, at)
	}
	decisions := map[storeKind][]bool{}
	for _, kind := range []storeKind{"memory", "redis"} {
		clock := newFakeClock(base)
		svc := newTestService(t, newTestStore(t, kind), clock,
			oneRuleDomain(ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: limit, Period: period}))
		var admitted []time.Duration
		for _, at := range times {
			clock.Set(base.Add(at))
			resp, err := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
			if err != nil {
				t.Fatal(err)
			}
			ok := resp.OverallCode == rlsv3.RateLimitResponse_OK
			decisions[kind] = append(decisions[kind], ok)
			if ok {
				admitted = append(admitted, at)
			}
		}
		for i := range admitted {
			n := 0
			for j := i; j < len(admitted) && admitted[j] < admitted[i]+period; j++ {
				n++
			}
			if n > limit {
				t.Fatalf("%s: %d requests admitted in the window starting %v", kind, n, admitted[i])
			}
		}
		// Not too strict either (TestSlidingWindowExactness bounds each denial).
		if len(admitted) < 100 {
			t.Fatalf("%s: only %d admitted; the sliding window is too strict", kind, len(admitted))
		}
	}
	if fmt.Sprint(decisions["memory"]) != fmt.Sprint(decisions["redis"]) {
		t.Fatalf("memory and redis disagree")
	}
}

// TestGroupIsAtomic: a descriptor with several rules (limit + spike arrest + quota) is charged
// only when every rule admits.
func TestGroupIsAtomic(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		t.Run(string(kind), func(t *testing.T) {
			clock := newFakeClock(base)
			d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{Key: "k", Name: "p", Limits: []ir.RateLimitRule{
				{Kind: "limit", Algorithm: ir.FixedWindow, Requests: 3, Period: time.Minute},
				{Kind: "spike_arrest", Algorithm: ir.LeakyBucket, Requests: 1, Period: time.Second, Burst: 1},
			}}}}
			svc := newTestService(t, newTestStore(t, kind), clock, d)
			want := []struct {
				at time.Duration
				ok bool
			}{{0, true}, {100 * ms, false}, {200 * ms, false}, {time.Second, true}, {2 * time.Second, true}, {3 * time.Second, false}, {61 * time.Second, true}}
			for i, w := range want {
				clock.Set(base.Add(w.at))
				resp, _ := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
				if ok := resp.OverallCode == rlsv3.RateLimitResponse_OK; ok != w.ok {
					t.Fatalf("step %d: ok=%v want %v", i, ok, w.ok)
				}
			}
		})
	}
}
