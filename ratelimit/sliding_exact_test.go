package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
)

// TestSlidingWindowNeverExceedsExactLog drives the memory and Redis stores with one random
// sequence of sliding-window checks (periods that 20 does not divide, periods under 20 µs,
// costs of 0 to past the limit, groups naming two counters) and checks against an exact log of
// what was admitted: no window of the period ever holds more than the limit, both stores give
// the same answers, and a denial comes at most one bucket earlier than the exact log's.
func TestSlidingWindowNeverExceedsExactLog(t *testing.T) {
	mem := NewMemoryStore()
	red := newTestStore(t, "redis")
	rng := rand.New(rand.NewSource(7))
	ctx := context.Background()
	type unit struct{ at, n int64 }
	for round := 0; round < 60; round++ {
		period := []int64{1, 7, 19, 20, 21, 39, 1000, 999_983, 1_000_000, 3_600_000_001}[rng.Intn(10)]
		limit := uint64(1 + rng.Intn(12))
		key := fmt.Sprintf("sx%d", round)
		now := int64(1_700_000_000_000_000) + rng.Int63n(period)
		var log []unit
		for step := 0; step < 300; step++ {
			now += rng.Int63n(period/7 + 2)
			cost := uint64(rng.Intn(int(limit) + 2))
			if rng.Intn(10) == 0 {
				cost = 0
			}
			g := [][]Check{{{Key: key, Alg: AlgSlidingWindow, Limit: limit, Period: period, Cost: cost}}}
			a, _ := mem.Eval(ctx, now, g)
			b, err := red.Eval(ctx, now, g)
			if err != nil {
				t.Fatal(err)
			}
			if a[0][0] != b[0][0] {
				t.Fatalf("round %d step %d (period %d, limit %d, cost %d): memory %+v, redis %+v", round, step, period, limit, cost, a[0][0], b[0][0])
			}
			var in uint64 // exact log: units in (now-period, now]
			for _, u := range log {
				if u.at > now-period {
					in += uint64(u.n)
				}
			}
			r := a[0][0]
			if r.Allowed && cost > 0 {
				if in+cost > limit {
					t.Fatalf("round %d step %d: admitted %d with %d in the window, limit %d", round, step, cost, in, limit)
				}
				log = append(log, unit{now, int64(cost)})
			}
			if !r.Allowed && cost <= limit && in+cost <= limit {
				// Denied where the exact log admits: only for units within one bucket of leaving.
				var late uint64
				w := slidingWidth(period)
				for _, u := range log {
					if u.at <= now-period && u.at > now-period-w {
						late += uint64(u.n)
					}
				}
				if in+late+cost <= limit {
					t.Fatalf("round %d step %d: denied %d with %d in the window (+%d late), limit %d", round, step, cost, in, late, limit)
				}
			}
		}
	}
}
