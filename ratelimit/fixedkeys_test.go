package ratelimit

import (
	"context"
	"testing"
	"time"
)

// TestFixedWindowKeys checks what the one-call fixed-window path leaves in Redis: a charged
// key carries an expiry, a request denied on a fresh key (cost above the limit) leaves no
// key behind, and a denied request takes its charge back. Both ways calls are sent: packed
// into one group-script call (single node, Sentinel) and one call per group (Redis Cluster).
func TestFixedWindowKeys(t *testing.T) {
	packed := newTestStore(t, "redis").(*RedisStore)
	perGroup := NewRedisStore(packed.Client(), RedisOptions{Timeout: 5 * time.Second})
	perGroup.cluster = true
	t.Run("packed", func(t *testing.T) { testFixedWindowKeys(t, packed) })
	t.Run("per-group", func(t *testing.T) { testFixedWindowKeys(t, perGroup) })
}

func testFixedWindowKeys(t *testing.T, s *RedisStore) {
	ctx := context.Background()
	if err := s.Client().Del(ctx, "fk:{a}").Err(); err != nil {
		t.Fatal(err)
	}
	now := int64(1_700_000_000_000_000)
	check, eval := fixedWindowHelpers(t, s, now)
	if r := eval(check("fk:{a}", 2, 3)); r.Allowed || r.Remaining != 2 {
		t.Fatalf("cost above limit on a fresh key: %+v", r)
	}
	// A cost above the limit only reads the counter (an INCRBY of it could overflow): no key
	// is created, so none can live without an expiry.
	if n, _ := s.Client().Exists(ctx, "fk:{a}").Result(); n != 0 {
		t.Fatalf("a denied request of a cost above the limit created the key")
	}
	if r := eval(check("fk:{a}", 2, 1)); !r.Allowed || r.Remaining != 1 {
		t.Fatalf("first admit: %+v", r)
	}
	ttl, _ := s.Client().PTTL(ctx, "fk:{a}").Result()
	if ttl <= 60*time.Second || ttl > 61*time.Second {
		t.Fatalf("ttl %v, want window end + 60s", ttl)
	}
	if r := eval(check("fk:{a}", 2, 2)); r.Allowed || r.Remaining != 1 || r.RetryAfter != 1_000_000 {
		t.Fatalf("over limit: %+v", r)
	}
	if v, _ := s.Client().Get(ctx, "fk:{a}").Int(); v != 1 {
		t.Fatalf("count after a denied request %d, want 1 (charge taken back)", v)
	}
	if r := eval(check("fk:{a}", 2, 1)); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("last admit: %+v", r)
	}
	if ttl2, _ := s.Client().PTTL(ctx, "fk:{a}").Result(); ttl2 > ttl || ttl2 <= 60*time.Second {
		t.Fatalf("ttl %v after charging, was %v: expiry must not move", ttl2, ttl)
	}
}

// TestFixedWindowNative checks the native path of a fixed-window check of cost 1 (SET NX PX
// and INCRBY, see fixedNative): the same answers as the scripts, the scripts' expiry, and a
// denied request's unit taken back, so that a later check of cost 0 finds the exact count.
// Both store modes: packed (single node, Sentinel) and one call per group (Redis Cluster).
func TestFixedWindowNative(t *testing.T) {
	packed := newTestStore(t, "redis").(*RedisStore)
	perGroup := NewRedisStore(packed.Client(), RedisOptions{Timeout: 5 * time.Second})
	perGroup.cluster = true
	t.Run("packed", func(t *testing.T) { testFixedWindowNative(t, packed, "fn:{a}") })
	t.Run("per-group", func(t *testing.T) { testFixedWindowNative(t, perGroup, "fn:{b}") })
}

func testFixedWindowNative(t *testing.T, s *RedisStore, key string) {
	ctx := context.Background()
	zero := key + ":zero"
	if err := s.Client().Del(ctx, key, zero).Err(); err != nil {
		t.Fatal(err)
	}
	now := int64(1_700_000_000_000_000)
	check, eval := fixedWindowHelpers(t, s, now)
	// count checks the counter once the denied call has been answered: a denial's unit is
	// given back before the answer.
	count := func(key string, want int) {
		t.Helper()
		if v, _ := s.Client().Get(ctx, key).Int(); v != want {
			t.Fatalf("%s: count %d, want %d (denied units taken back)", key, v, want)
		}
	}
	want := func(got, want Result) {
		t.Helper()
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	want(eval(check(key, 2, 1)), Result{Allowed: true, Remaining: 1, Reset: 1_000_000})
	ttl, _ := s.Client().PTTL(ctx, key).Result()
	if ttl <= 60*time.Second || ttl > 61*time.Second {
		t.Fatalf("ttl %v, want window end + 60s", ttl)
	}
	want(eval(check(key, 2, 1)), Result{Allowed: true, Remaining: 0, Reset: 1_000_000})
	for i := 0; i < 3; i++ {
		want(eval(check(key, 2, 1)), Result{Remaining: 0, Reset: 1_000_000, RetryAfter: 1_000_000})
	}
	count(key, 2)
	// At the limit, a check of cost 0 admits (it would not over a count left above the limit).
	want(eval(check(key, 2, 0)), Result{Allowed: true, Remaining: 0, Reset: 1_000_000})
	if ttl2, _ := s.Client().PTTL(ctx, key).Result(); ttl2 > ttl || ttl2 <= 60*time.Second {
		t.Fatalf("ttl %v after charging, was %v: expiry must not move", ttl2, ttl)
	}
	// Limit 0: denied; the counter created meanwhile carries the expiry (nothing is left
	// behind forever) and comes back to 0.
	want(eval(check(zero, 0, 1)), Result{Remaining: 0, Reset: 1_000_000, RetryAfter: 1_000_000})
	count(zero, 0)
	if ttl, _ := s.Client().PTTL(ctx, zero).Result(); ttl <= 60*time.Second || ttl > 61*time.Second {
		t.Fatalf("limit 0: ttl %v, want window end + 60s", ttl)
	}
}

// fixedWindowHelpers returns a builder of one-second fixed-window checks at now and a
// function that evaluates one check alone on s.
func fixedWindowHelpers(t *testing.T, s *RedisStore, now int64) (func(key string, limit, cost uint64) Check, func(Check) Result) {
	check := func(key string, limit, cost uint64) Check {
		return Check{Key: key, Alg: AlgFixedWindow, Limit: limit, Period: 1_000_000, WindowEnd: now + 1_000_000, Cost: cost}
	}
	eval := func(c Check) Result {
		t.Helper()
		res, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0][0]
	}
	return check, eval
}
