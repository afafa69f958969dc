package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

func newReservingStore(t testing.TB, addr string, hold time.Duration, clock Clock) *ReservingStore {
	t.Helper()
	c, err := NewRedisClient(addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	s := NewReservingStore(NewRedisStore(c, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: hold, Clock: clock})
	t.Cleanup(func() { s.Close() })
	return s
}

func counter(t testing.TB, c redis.UniversalClient, key string) int64 {
	t.Helper()
	v, err := c.Get(context.Background(), key).Int64()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return v
}

// TestReservingAnswersLikeRedis: on one instance, the reserving store gives the answers the
// Redis store gives, field by field, over random requests (fixed windows of small and large
// limits with costs 0-3, groups mixing them with the other algorithms, windows rolling over,
// reservations expiring), while admitting most requests without a round trip; and the
// counters in Redis hold exactly what was admitted once the units held are given back.
func TestReservingAnswersLikeRedis(t *testing.T) {
	r := itest.StartRedis(t)
	plain := redisStoreFor(t, mustClient(t, r.Addr))
	clock := newFakeClock(base)
	res := newReservingStore(t, r.Addr, 300*time.Millisecond, clock)
	rng := rand.New(rand.NewSource(5))
	limits := []uint64{1, 3, 40, 250, 2000}
	check := func(prefix string, k int, alg Algorithm, now int64, cost uint64) Check {
		c := Check{Key: fmt.Sprintf("%s{k%d}:%c", prefix, k, alg), Alg: alg, Limit: limits[k%len(limits)], Cost: cost}
		switch alg {
		case AlgFixedWindow:
			c.Period = 2_000_000
			c.WindowEnd = now - now%c.Period + c.Period
			c.Key += ":" + strconv.FormatInt(c.WindowEnd, 36)
		case AlgSlidingWindow:
			c.Period = 1_000_000
		default:
			c.Period, c.Burst = 50_000, 4
		}
		return c
	}
	now := base.UnixMicro()
	var sent, local int
	for step := 0; step < 6000; step++ {
		now += int64(rng.Intn(4_000))
		if rng.Intn(400) == 0 {
			now += int64(rng.Intn(1_500_000)) // past reservations' hold, sometimes a window
		}
		if rng.Intn(50) == 0 {
			res.Sweep(now)
		}
		// Costs: mostly 1, sometimes 0 (reads), 2 or 3.
		cost := uint64(1)
		if x := rng.Intn(10); x == 0 {
			cost = 0
		} else if x == 1 {
			cost = uint64(2 + rng.Intn(2))
		}
		k := rng.Intn(len(limits) * 2)
		shape := rng.Intn(10)
		mk := func(prefix string) []Check {
			g := []Check{check(prefix, k, AlgFixedWindow, now, cost)}
			if shape == 0 { // a group: the same counter with another algorithm's check
				g = append(g, check(prefix, k, []Algorithm{AlgSlidingWindow, AlgTokenBucket, AlgLeakyBucket}[k%3], now, cost))
			}
			return g
		}
		a, err := plain.Eval(context.Background(), now, [][]Check{mk("p:")})
		if err != nil {
			t.Fatal(err)
		}
		before := res.Inner().(*RedisStore).BatchSizes()
		b, err := res.Eval(context.Background(), now, [][]Check{mk("r:")})
		if err != nil {
			t.Fatal(err)
		}
		sent++
		if fmt.Sprint(before) == fmt.Sprint(res.Inner().(*RedisStore).BatchSizes()) {
			local++
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("step %d at %d, key %d cost %d shape %d:\nredis     %+v\nreserving %+v", step, now, k, cost, shape, a, b)
		}
	}
	t.Logf("%d of %d requests answered without a round trip", local, sent)
	if local < sent/5 {
		t.Errorf("only %d of %d requests answered locally: reservations are not used", local, sent)
	}
	// Held units go back: every counter of the current windows matches the plain store's.
	res.sweep(now, true)
	rc := res.Inner().(*RedisStore).Client()
	for k := 0; k < len(limits)*2; k++ {
		p, q := check("p:", k, AlgFixedWindow, now, 1), check("r:", k, AlgFixedWindow, now, 1)
		if a, b := counter(t, rc, p.Key), counter(t, rc, q.Key); a != b {
			t.Errorf("key %d: counter %d after giving back, the Redis store's is %d", k, b, a)
		}
	}
}

func counterValue(c prometheus.Counter) float64 { return promtest.ToFloat64(c) }

func mustClient(t testing.TB, addr string) redis.UniversalClient {
	t.Helper()
	c, err := NewRedisClient(addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReservingDistributed: 4 instances, each holding reservations, 50 concurrent callers on
// one counter (limit 1,000 a minute): never more than 1,000 admitted; every caller goes on
// until it is denied three times in a row, so every unit held is used, and exactly 1,000 are
// admitted. Most admissions were local, and the counter in Redis ends at 1,000.
func TestReservingDistributed(t *testing.T) {
	r := itest.StartRedis(t)
	reservingDistributed(t, func(clock Clock) *ReservingStore { return newReservingStore(t, r.Addr, time.Minute, clock) })
}

// TestReservingDistributedCluster: the same on a 3-node Redis Cluster.
func TestReservingDistributedCluster(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	reservingDistributed(t, func(clock Clock) *ReservingStore {
		c, err := NewRedisClient(clusterURL(addrs))
		if err != nil {
			t.Fatal(err)
		}
		s := NewReservingStore(NewRedisStore(c, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: time.Minute, Clock: clock})
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func reservingDistributed(t *testing.T, newStore func(Clock) *ReservingStore) {
	clock := newFakeClock(base) // frozen: one window
	d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{Key: "k", Name: "lim",
		Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 1000, Period: time.Minute}}}}}
	var clients []rlsv3.RateLimitServiceClient
	var stores []*ReservingStore
	for i := 0; i < 4; i++ {
		st := newStore(clock)
		stores = append(stores, st)
		svc := newTestService(t, st, clock, d)
		svc.prefix = "resdist:"
		clients = append(clients, serve(t, svc))
	}
	var admitted, denied atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 50; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			cl := clients[c%4]
			for run, i := 0, 0; run < 3 && i < 500; i++ {
				resp, err := cl.ShouldRateLimit(context.Background(), req("test", []string{"k", "shared"}))
				if err != nil {
					t.Error(err)
					return
				}
				if resp.OverallCode == rlsv3.RateLimitResponse_OK {
					admitted.Add(1)
					run = 0
				} else {
					denied.Add(1)
					run++
				}
			}
		}(c)
	}
	wg.Wait()
	if admitted.Load() != 1000 {
		t.Fatalf("admitted %d (denied %d); want exactly 1000", admitted.Load(), denied.Load())
	}
	var local float64
	for _, st := range stores {
		local += counterValue(st.used)
	}
	t.Logf("admitted %d, denied %d, %v admitted from reservations", admitted.Load(), denied.Load(), local)
	if local < 300 {
		t.Errorf("%v of 1000 admissions from reservations: reservations are not used", local)
	}
	// The counter's key, as the service named it.
	var key string
	stores[0].mu.Lock()
	for k := range stores[0].leases {
		key = k
	}
	stores[0].mu.Unlock()
	if v := counter(t, stores[0].Inner().(*RedisStore).Client(), key); v != 1000 {
		t.Errorf("counter %d, want 1000", v)
	}
}

// TestReservingGivesBackUnusedUnits: units one instance reserved and does not use go back to
// the counter after the hold, and another instance can then admit them; until then it is
// denied (the documented trade). Close gives back what is held too.
func TestReservingGivesBackUnusedUnits(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	a := newReservingStore(t, r.Addr, 200*time.Millisecond, clock)
	b := newReservingStore(t, r.Addr, 200*time.Millisecond, clock)
	now := base.UnixMicro()
	c := Check{Key: "give:{k}", Alg: AlgFixedWindow, Limit: 100, Period: 60_000_000, WindowEnd: now + 60_000_000, Cost: 1}
	eval := func(s *ReservingStore) Result {
		t.Helper()
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		return rs[0][0]
	}
	// A busy counter on a: reservations grow (1, 5, then capped by a sixteenth of what is left).
	for i := 0; i < 20; i++ {
		if r := eval(a); !r.Allowed || r.Remaining != uint64(100-1-i) {
			t.Fatalf("a, call %d: %+v", i, r)
		}
	}
	held := a.leases[c.Key].avail
	rc := a.Inner().(*RedisStore).Client()
	if held == 0 || counter(t, rc, c.Key) != int64(20+held) {
		t.Fatalf("a holds %d, counter %d", held, counter(t, rc, c.Key))
	}
	// b takes the rest; the units a holds are not b's.
	for i := 0; i < int(80-held); i++ {
		if r := eval(b); !r.Allowed {
			t.Fatalf("b, call %d denied with %d held by a: %+v", i, held, r)
		}
	}
	if r := eval(b); r.Allowed {
		t.Fatalf("b admitted past the counter: %+v", r)
	}
	// Before the hold ends nothing goes back; after it, a's units do, and b admits them.
	a.Sweep(now + 100_000)
	if r := eval(b); r.Allowed {
		t.Fatalf("b admitted while a holds its units: %+v", r)
	}
	now += 250_000
	a.Sweep(now)
	if v := counter(t, rc, c.Key); v != 100-int64(held) {
		t.Fatalf("counter %d after a gave back %d, want %d", v, held, 100-held)
	}
	for i := 0; i < int(held); i++ {
		if r := eval(b); !r.Allowed {
			t.Fatalf("b, call %d after the give-back: %+v", i, r)
		}
	}
	if r := eval(b); r.Allowed || r.Remaining != 0 {
		t.Fatalf("b past the limit: %+v", r)
	}
	if got := counterValue(a.returned); got != float64(held) {
		t.Errorf("returned metric %v, want %d", got, held)
	}

	// Close gives back what is held.
	c.Key, c.Limit = "give:{close}", 1000
	for i := 0; i < 10; i++ {
		eval(a)
	}
	held = a.leases[c.Key].avail
	if held == 0 {
		t.Fatal("nothing held")
	}
	a.Close()
	if v := counter(t, b.Inner().(*RedisStore).Client(), c.Key); v != 10 {
		t.Fatalf("counter %d after close, want 10 (held %d)", v, held)
	}
}

// TestReservingRedisDown: with Redis down, units already held are still admitted (they are
// charged), anything else fails (the service applies the limit's fail mode), and units that
// could not be given back stay held and go back once Redis returns; a counter lost with a
// Redis restart is not recreated by the give-back.
func TestReservingRedisDown(t *testing.T) {
	r := itest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	clock := newFakeClock(base)
	s := newReservingStore(t, r.Addr, 200*time.Millisecond, clock)
	now := base.UnixMicro()
	c := Check{Key: "down:{k}", Alg: AlgFixedWindow, Limit: 1000, Period: 60_000_000, WindowEnd: now + 60_000_000, Cost: 1}
	eval := func() (Result, error) {
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			return Result{}, err
		}
		return rs[0][0], nil
	}
	for i := 0; i < 8; i++ { // reserves 1, then 5: one held after 8 calls
		if _, err := eval(); err != nil {
			t.Fatal(err)
		}
	}
	held := s.leases[c.Key].avail
	if held == 0 {
		t.Fatal("nothing held")
	}
	r.Stop()
	for i := uint64(0); i < held; i++ {
		if res, err := eval(); err != nil || !res.Allowed {
			t.Fatalf("held unit %d with Redis down: %+v %v", i, res, err)
		}
	}
	if _, err := eval(); err == nil {
		t.Fatal("no error with Redis down and nothing held")
	}
	// Reserve more, then fail to give them back.
	r.Restart()
	for i := 0; i < 3; i++ {
		if _, err := eval(); err != nil {
			t.Fatal(err)
		}
	}
	held = s.leases[c.Key].avail
	rc := s.Inner().(*RedisStore).Client()
	before := counter(t, rc, c.Key)
	r.Stop()
	now += 300_000
	s.Sweep(now)
	if got := s.leases[c.Key].avail; got != held {
		t.Fatalf("held %d after a failed give-back, want %d", got, held)
	}
	r.Restart()
	s.Sweep(now)
	if got, want := counter(t, rc, c.Key), before-int64(held); got != want {
		t.Fatalf("counter %d after the give-back, want %d", got, want)
	}
	// A counter that is gone is not recreated (without an expiry) by a give-back.
	for i := 0; i < 4; i++ {
		if _, err := eval(); err != nil {
			t.Fatal(err)
		}
	}
	if s.leases[c.Key].avail == 0 {
		t.Fatal("nothing held")
	}
	if err := rc.Del(context.Background(), c.Key).Err(); err != nil {
		t.Fatal(err)
	}
	now += 300_000
	s.Sweep(now)
	if n, err := rc.Exists(context.Background(), c.Key).Result(); err != nil || n != 0 {
		t.Fatalf("counter recreated by the give-back: %d %v", n, err)
	}
}
