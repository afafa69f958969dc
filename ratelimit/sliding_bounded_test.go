package ratelimit

import (
	"context"
	"runtime"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/api-gateway/api-gateway/xds/ir"
)

// TestSlidingWindowHugeCostIsBoundedWork: a sliding window of 1,000,000 per hour charged
// hits_addend 1,000,000 at once (the whole limit) takes one bounded step, not one per unit:
// the call answers in milliseconds and the counter's state stays a few hundred bytes, in
// memory and in Redis (the exact log stored one entry per unit: 5-8 s of Redis and 0.5 GB).
func TestSlidingWindowHugeCostIsBoundedWork(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		t.Run(string(kind), func(t *testing.T) {
			store := newTestStore(t, kind)
			clock := newFakeClock(base)
			svc := newTestService(t, store, clock, oneRuleDomain(ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 1_000_000, Period: time.Hour}))
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
				q := req("test", []string{"k", "v"})
				q.HitsAddend = 1_000_000
				t0 := time.Now()
				resp, err := svc.ShouldRateLimit(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				if d := time.Since(t0); d > 250*time.Millisecond {
					t.Fatalf("call %d took %v", i, d)
				}
				if resp.OverallCode != want {
					t.Fatalf("call %d: %v, want %v", i, resp.OverallCode, want)
				}
				clock.Set(clock.Now().Add(time.Second))
			}
			switch s := store.(type) {
			case *MemoryStore:
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(s) // the counters are what is measured
				if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 1<<20 {
					t.Fatalf("the memory store grew by %d bytes", grown)
				}
			case *RedisStore:
				keys, err := s.Client().Keys(context.Background(), "*").Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range keys {
					n, err := s.Client().MemoryUsage(context.Background(), k).Result()
					if err != nil {
						t.Fatal(err)
					}
					if n > 1024 {
						t.Fatalf("%s uses %d bytes of Redis", k, n)
					}
				}
			}
		})
	}
}

// TestCostAboveLimitSkipsStore: a cost no counter of the descriptor can ever hold (above a
// window's limit, above a bucket's burst) is answered OVER_LIMIT without asking the store,
// whatever the algorithm, and the answer says when the window (or bucket) would be full again.
func TestCostAboveLimitSkipsStore(t *testing.T) {
	for _, rule := range []ir.RateLimitRule{
		{Algorithm: ir.FixedWindow, Requests: 5, Period: time.Minute},
		{Algorithm: ir.SlidingWindow, Requests: 5, Period: time.Minute},
		{Algorithm: ir.TokenBucket, Requests: 5, Period: time.Minute},
		{Algorithm: ir.LeakyBucket, Requests: 5, Period: time.Minute, Burst: 3},
	} {
		t.Run(string(rule.Algorithm), func(t *testing.T) {
			store := &countingStore{Store: NewMemoryStore()}
			svc := newTestService(t, store, newFakeClock(base), oneRuleDomain(rule))
			for _, cost := range []uint32{6, 1 << 31, 1<<32 - 1} {
				q := req("test", []string{"k", "v"})
				q.HitsAddend = cost
				resp, err := svc.ShouldRateLimit(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
					t.Fatalf("cost %d: %v", cost, resp.OverallCode)
				}
				if resp.Statuses[0].DurationUntilReset.AsDuration() <= 0 {
					t.Fatalf("cost %d: no reset in %v", cost, resp.Statuses[0])
				}
			}
			if n := store.calls; n != 0 {
				t.Fatalf("the store was asked %d times", n)
			}
		})
	}
}
