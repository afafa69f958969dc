package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"
)

// TestStoresAgree drives the memory store and the Redis script (its single-check paths and
// group())
// with the same random checks (costs 0-3, random times, several keys) and requires identical
// results, field by field.
func TestStoresAgree(t *testing.T) {
	mem := NewMemoryStore()
	red := newTestStore(t, "redis")
	// The same Redis, one call per group, as on a Redis Cluster.
	perGroup := NewRedisStore(red.(*RedisStore).Client(), RedisOptions{Timeout: 5 * time.Second})
	perGroup.cluster = true
	rng := rand.New(rand.NewSource(11))
	mkCheck := func(alg Algorithm, key string, now int64) Check {
		c := Check{Key: key, Alg: alg, Limit: uint64(1 + rng.Intn(5)), Cost: uint64(rng.Intn(4))}
		switch alg {
		case AlgFixedWindow:
			c.Period = 1_000_000
			c.WindowEnd = now - now%c.Period + c.Period
			c.Key += fmt.Sprintf(":%d", c.WindowEnd) // as the service names fixed windows
		case AlgSlidingWindow:
			c.Period = 1_000_000
		default:
			c.Limit = 5
			c.Period = 200_000 // T1
			c.Burst = uint64(1 + rng.Intn(3))
		}
		return c
	}
	algs := []Algorithm{AlgFixedWindow, AlgSlidingWindow, AlgTokenBucket, AlgLeakyBucket}
	now := int64(1_700_000_000_000_000)
	for step := 0; step < 1500; step++ {
		now += int64(rng.Intn(150_000))
		n := 1
		if rng.Intn(3) == 0 {
			n = 2 + rng.Intn(2)
		}
		var g []Check
		used := map[string]bool{}
		for len(g) < n {
			alg := algs[rng.Intn(len(algs))]
			key := fmt.Sprintf("agree:{k%d}:%c", rng.Intn(3), alg)
			if used[key] {
				continue
			}
			used[key] = true
			// Limits are a property of the key: keep them stable per key.
			r := rand.New(rand.NewSource(int64(len(key)) + int64(key[len(key)-1]) + int64(key[8])))
			saved := rng
			rng = r
			c := mkCheck(alg, key, now)
			rng = saved
			c.Cost = uint64(rng.Intn(4))
			g = append(g, c)
		}
		a, err := mem.Eval(context.Background(), now, [][]Check{g})
		if err != nil {
			t.Fatal(err)
		}
		other := red
		if step%2 == 1 {
			other = perGroup
		}
		b, err := other.Eval(context.Background(), now, [][]Check{g})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("step %d at %d (per-group %v), checks %+v:\nmemory %+v\nredis  %+v", step, now, step%2 == 1, g, a, b)
		}
	}
}

// TestSlidingCostOverLimitOnEmptyWindow: a request whose cost alone is over a sliding
// window's limit, on a counter with nothing in its window, is denied with full capacity left
// (it used to crash the memory store and fail the Redis scripts).
func TestSlidingCostOverLimitOnEmptyWindow(t *testing.T) {
	red := newTestStore(t, "redis").(*RedisStore)
	perGroup := NewRedisStore(red.Client(), RedisOptions{Timeout: 5 * time.Second})
	perGroup.cluster = true
	for name, st := range map[string]Store{"memory": NewMemoryStore(), "redis": red, "redis-per-group": perGroup} {
		c := Check{Key: "empty:{" + name + "}", Alg: AlgSlidingWindow, Limit: 2, Period: 1_000_000, Cost: 3}
		rs, err := st.Eval(context.Background(), 1_700_000_000_000_000, [][]Check{{c}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := (Result{Remaining: 2, RetryAfter: 1_000_000}); rs[0][0] != want {
			t.Errorf("%s: %+v, want %+v", name, rs[0][0], want)
		}
	}
}

// TestOneRequestNamingACounterTwiceInOrder: a request whose descriptors name one fixed-window
// counter twice, one of cost 1 (sent as native commands) and one of another cost (sent to the
// script), is decided descriptor after descriptor on Redis as in the memory store. The native
// commands ran before the script, so the later descriptor was charged first: with 0 of 2 used,
// [cost 2, cost 1] admitted the second and denied the first, and a cost-0 check before a cost-1
// one saw the charge that follows it.
func TestOneRequestNamingACounterTwiceInOrder(t *testing.T) {
	red := newTestStore(t, "redis")
	now := base.UnixMicro()
	for i, costs := range [][]uint64{{2, 1}, {0, 1}, {1, 2, 1}, {1, 0, 1, 1}} {
		mem := NewMemoryStore()
		var groups [][]Check
		for _, c := range costs {
			ch := fixedCheck(fmt.Sprintf("order:%d:{k}", i), 2, now)
			ch.Cost = c
			groups = append(groups, []Check{ch})
		}
		a, _ := mem.Eval(context.Background(), now, groups)
		b, err := red.Eval(context.Background(), now, groups)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("costs %v:\nmemory %v\nredis  %v", costs, a, b)
		}
	}
}

// TestLeakyBucketBurstLoweredRemainingZero: a leaky bucket's key names its rate, not its
// burst, so after the burst is lowered its TAT may lie past now+tau. The memory store
// reported a denial's remaining as 2^64-8 there (a negative count converted); Redis says 0.
func TestLeakyBucketBurstLoweredRemainingZero(t *testing.T) {
	red := newTestStore(t, "redis")
	now := base.UnixMicro()
	var got []string
	for _, s := range []Store{NewMemoryStore(), red} {
		c := Check{Key: "lowered:{l}", Alg: AlgLeakyBucket, Period: 100_000, Burst: 10, Cost: 10}
		a, _ := s.Eval(context.Background(), now, [][]Check{{c}})
		c.Burst, c.Cost = 2, 1
		b, _ := s.Eval(context.Background(), now, [][]Check{{c}})
		c.Cost = 0
		d, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if b[0][0].Allowed || b[0][0].Remaining != 0 || d[0][0].Remaining != 0 {
			t.Errorf("%s: after the burst was lowered: %+v, %+v", s.Name(), b[0][0], d[0][0])
		}
		got = append(got, fmt.Sprint(a, b, d))
	}
	if got[0] != got[1] {
		t.Errorf("memory %s\nredis  %s", got[0], got[1])
	}
}
