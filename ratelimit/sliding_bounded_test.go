package ratelimit

import (
	"context"
	"math/rand"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/api-gateway/api-gateway/ir"
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
				if d := time.Since(t0); d > time.Second { // it took 5-8 s; a loaded machine must not fail it
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

// TestSlidingWindowExactness pins what the bucketed sliding window keeps of the exact log:
// every admission is one the exact log of the same period admits too (never more than the
// limit in any window of the period), and every denial is one the exact log would make with
// a window one bucket longer (period + period/slidingBuckets): a unit is forgotten at most one
// bucket late. Random arrivals and costs, on both stores, which must agree.
func TestSlidingWindowExactness(t *testing.T) {
	const limit = 20
	period := 10 * time.Second
	w := slidingWidth(period.Microseconds())
	rng := rand.New(rand.NewSource(3))
	type arrival struct {
		at   int64 // µs after base
		cost uint64
	}
	var arrivals []arrival
	at := int64(0)
	for i := 0; i < 1500; i++ {
		at += int64(rng.Intn(400_000))
		arrivals = append(arrivals, arrival{at, uint64(rng.Intn(4))})
	}
	// held returns the units of admitted that count at t for a log of window p: admitted in (t-p, t].
	held := func(admitted []arrival, t, p int64) uint64 {
		n := uint64(0)
		for _, a := range admitted {
			if a.at > t-p && a.at <= t {
				n += a.cost
			}
		}
		return n
	}
	decisions := map[storeKind][]bool{}
	for _, kind := range []storeKind{"memory", "redis"} {
		clock := newFakeClock(base)
		svc := newTestService(t, newTestStore(t, kind), clock,
			oneRuleDomain(ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: limit, Period: period}))
		var admitted []arrival
		denials := 0
		for _, a := range arrivals {
			clock.Set(base.Add(time.Duration(a.at) * time.Microsecond))
			q := req("test", []string{"k", "v"})
			q.Descriptors[0].HitsAddend = wrapUint64(a.cost)
			resp, err := svc.ShouldRateLimit(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			ok := resp.OverallCode == rlsv3.RateLimitResponse_OK
			decisions[kind] = append(decisions[kind], ok)
			exact := held(admitted, a.at, period.Microseconds())
			longer := held(admitted, a.at, period.Microseconds()+w)
			if ok && exact+a.cost > limit {
				t.Fatalf("%s: admitted cost %d at %d with %d units in the window", kind, a.cost, a.at, exact)
			}
			if !ok {
				denials++
				if longer+a.cost <= limit {
					t.Fatalf("%s: denied cost %d at %d with only %d units in a window one bucket longer", kind, a.cost, a.at, longer)
				}
			}
			if ok {
				admitted = append(admitted, a)
			}
		}
		if denials == 0 {
			t.Fatalf("%s: nothing was denied; the test does not reach the limit", kind)
		}
	}
	for i := range decisions["memory"] {
		if decisions["memory"][i] != decisions["redis"][i] {
			t.Fatalf("arrival %d: memory %v, redis %v", i, decisions["memory"][i], decisions["redis"][i])
		}
	}
}

// slidingUnits sums the units a sliding window's Redis value holds ("first n0 n1 ...").
func slidingUnits(t testing.TB, v string) int64 {
	t.Helper()
	f := strings.Fields(v)
	var sum int64
	for _, x := range f[min(1, len(f)):] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			t.Fatalf("sliding window value %q: %v", v, err)
		}
		sum += n
	}
	return sum
}
