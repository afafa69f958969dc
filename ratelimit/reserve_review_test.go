package ratelimit

// Adversarial tests of fixed-window reservations (ReservingStore), from a review of the change:
// each scenario broke its first version (the comments tell how) and guards the fix; the stress
// tests check the invariants under load. Every test runs against a real redis-server.

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// reviewStore is a ReservingStore whose inner RedisStore has the given timeout.
func reviewStore(t testing.TB, addr string, hold, timeout time.Duration, clock Clock) *ReservingStore {
	t.Helper()
	c, err := NewRedisClient(addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	s := NewReservingStore(NewRedisStore(c, RedisOptions{Timeout: timeout}), ReserveOptions{Hold: hold, Clock: clock})
	t.Cleanup(func() { s.Close() })
	return s
}

// blockRedis makes the server busy (a Lua busy loop, which stops its event loop) for d, and
// returns once the server is blocked. Commands written to it meanwhile are read and run when
// the loop ends, even when their client has given up waiting and closed its connection: that
// is what a slow Redis (or a lost reply) does to a caller with a deadline. The returned
// channel is closed when the server answers again.
func blockRedis(t testing.TB, addr string, d time.Duration) <-chan struct{} {
	t.Helper()
	busy := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, ReadTimeout: -1, MaxRetries: -1})
	probe := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { busy.Close(); probe.Close() })
	// Warm both connections up.
	if err := busy.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := probe.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		const spin = `local t = redis.call('TIME')
local s = t[1] * 1000000 + t[2]
while true do
  local n = redis.call('TIME')
  if n[1] * 1000000 + n[2] - s >= tonumber(ARGV[1]) then break end
end
return 1`
		if err := busy.Eval(context.Background(), spin, nil, d.Microseconds()).Err(); err != nil {
			t.Errorf("busy script: %v", err)
		}
	}()
	// Wait until a PING no longer gets through: the server is in the loop.
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := probe.Ping(ctx).Err()
		cancel()
		if err != nil {
			return done
		}
		if i > 200 {
			t.Fatal("redis never got busy")
		}
		time.Sleep(time.Millisecond)
	}
}

// readyToAsk calls s with cost-1 checks at now until s holds no unit of c's counter and its
// next visit asks for a reservation; it returns the units admitted and that reservation.
func readyToAsk(t testing.TB, s *ReservingStore, now int64, c Check, want uint64) (admitted, reserve uint64) {
	t.Helper()
	for i := 0; i < 5000; i++ {
		s.mu.Lock()
		l := s.leases[c.Key]
		if l != nil && l.avail == 0 && l.visit != 0 && l.asking == nil {
			reserve = min(s.size(l, now), (c.Limit-min(l.count, c.Limit))/16)
		}
		s.mu.Unlock()
		if reserve >= want {
			return admitted, reserve
		}
		reserve = 0
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if !rs[0][0].Allowed {
			t.Fatalf("denied while getting ready: %+v", rs[0][0])
		}
		admitted += c.Cost
	}
	t.Fatal("never ready to ask for units")
	return 0, 0
}

func fixedCheck(key string, limit uint64, now int64) Check {
	return Check{Key: key, Alg: AlgFixedWindow, Limit: limit, Period: 60_000_000, WindowEnd: now - now%60_000_000 + 60_000_000, Cost: 1}
}

// drain calls s with c until it is denied three times in a row and returns what it admitted.
func drain(t testing.TB, s Store, now int64, c Check) uint64 {
	t.Helper()
	var n uint64
	for run, i := 0, 0; run < 3; i++ {
		if i > 100_000 {
			t.Fatal("drain does not end")
		}
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0][0].Allowed {
			n += c.Cost
			run = 0
		} else {
			run++
		}
	}
	return n
}

// TestReservingGiveBackWithLostReplyNotKept: a give-back whose reply is lost (a read
// timeout: Redis is slow, the command is already written) is counted as failed, so the units
// are put back into the lease (reserve.go giveBack, "l.avail += uint64(u.n)") although Redis
// does run the DECRBY. The instance then admits those units locally while the counter in
// Redis has already freed them for everyone else: over-admission across instances.
func TestReservingGiveBackWithLostReplyNotKept(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := reviewStore(t, r.Addr, 200*time.Millisecond, 150*time.Millisecond, clock)
	b := reviewStore(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	const limit = 1000
	c := fixedCheck("review:lost:{k}", limit, now)
	var admitted uint64
	for i := 0; i < 1000 && (a.leases[c.Key] == nil || a.leases[c.Key].avail < 10); i++ {
		rs, err := a.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil || !rs[0][0].Allowed {
			t.Fatalf("a, call %d: %+v %v", i, rs, err)
		}
		admitted++
	}
	held := a.leases[c.Key].avail
	if held == 0 {
		t.Fatal("a holds nothing")
	}
	rc := b.Inner().(*RedisStore).Client()
	if v := counter(t, rc, c.Key); v != int64(admitted+held) {
		t.Fatalf("counter %d, want %d", v, admitted+held)
	}
	// Redis is slow for 600ms; a gives back its units after the hold, and its 150ms timeout
	// expires before the reply.
	done := blockRedis(t, r.Addr, 600*time.Millisecond)
	a.Sweep(now + 250_000)
	<-done
	a.mu.Lock()
	stillHeld := a.leases[c.Key].avail
	a.mu.Unlock()
	v := counter(t, rc, c.Key)
	t.Logf("a held %d, gave them back (reply lost); a now holds %d, counter %d", held, stillHeld, v)
	// Everyone keeps calling until denied: b, then a.
	admitted += drain(t, b, now, c)
	admitted += drain(t, a, now, c)
	if admitted > limit {
		t.Errorf("admitted %d across two instances, limit %d (a held %d after a give-back Redis ran, counter was %d)", admitted, limit, stillHeld, v)
	}
}

// TestReservingCallerGivesUpUnitsGoBack: a visit that asks for units is charged
// cost+reserve in Redis; when its caller's deadline ends first (Envoy's rate-limit timeout is
// 20ms by default), or the request fails for another of its groups, ReservingStore.Eval's
// error path drops the result, so the reserved units are neither held nor given back: they
// are lost for the rest of the window (the plain store only loses the request's own cost).
func TestReservingCallerGivesUpUnitsGoBack(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := reviewStore(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	const limit = 10000
	c := fixedCheck("review:gaveup:{k}", limit, now)
	admitted, reserve := readyToAsk(t, a, now, c, 50)
	done := blockRedis(t, r.Addr, 400*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := a.Eval(ctx, now, [][]Check{{c}})
	cancel()
	if err == nil {
		t.Fatal("no error from a call that gave up")
	}
	<-done
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	time.Sleep(50 * time.Millisecond)
	// The hold passes, a gives back what it holds and closes.
	a.Sweep(now + 300_000)
	a.Close()
	// The caller that gave up is charged its cost (as with the plain store); nothing else.
	if v, want := counter(t, rc, c.Key), int64(admitted+1); v != want {
		t.Errorf("counter %d after a gave everything back, want %d (admitted %d + the abandoned call's cost 1): the %d units reserved by the abandoned call are lost for the window",
			v, want, admitted, reserve)
	}
}

// TestReservingCloseWaitsForVisitInFlight: Close gives back every unit held, but
// sweep(all) skips a lease with a visit in flight ("case l.inflight > 0" comes before
// "case all"), and the units that visit reserves arrive after the sweep: they are never given
// back.
func TestReservingCloseWaitsForVisitInFlight(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := reviewStore(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	const limit = 10000
	c := fixedCheck("review:close:{k}", limit, now)
	admitted, _ := readyToAsk(t, a, now, c, 50)
	done := blockRedis(t, r.Addr, 400*time.Millisecond)
	var res [][]Result
	var evalErr error
	evalDone := make(chan struct{})
	go func() {
		defer close(evalDone)
		res, evalErr = a.Eval(context.Background(), now, [][]Check{{c}})
	}()
	for i := 0; ; i++ { // the visit is in flight
		a.mu.RLock()
		inflight := a.leases[c.Key].inflight
		a.mu.RUnlock()
		if inflight > 0 {
			break
		}
		if i > 1000 {
			t.Fatal("visit never in flight")
		}
		time.Sleep(time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	<-evalDone
	<-done
	if evalErr != nil || !res[0][0].Allowed {
		t.Fatalf("in-flight call: %+v %v", res, evalErr)
	}
	admitted++
	rc := mustClient(t, r.Addr)
	if v := counter(t, rc, c.Key); v != int64(admitted) {
		t.Errorf("counter %d after Close, want %d (admitted): %d units reserved by the visit in flight at Close are never given back", v, admitted, v-int64(admitted))
	}
}

// TestReservingHugeCostCharged: nativeAmount caps the cost at MaxInt32, and a check of
// any cost goes native once it asks for units (fixedNative). A cost above 2^31-1 (hits_addend
// is a uint32) is then charged 2^31-1: the reserving store admits more than the limit and
// answers another Remaining than the Redis store, on one instance.
func TestReservingHugeCostCharged(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	plain := redisStoreFor(t, mustClient(t, r.Addr))
	res := newReservingStore(t, r.Addr, time.Second, clock)
	const limit = 10_000_000_000 // e.g. bytes a day, with hits_addend = body size
	for i, cost := range []uint64{1, 3_000_000_000, 3_000_000_000, 3_000_000_000, 3_000_000_000} {
		p, q := fixedCheck("review:huge:p:{k}", limit, now), fixedCheck("review:huge:r:{k}", limit, now)
		p.Cost, q.Cost = cost, cost
		a, err := plain.Eval(context.Background(), now, [][]Check{{p}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := res.Eval(context.Background(), now+int64(i), [][]Check{{q}})
		if err != nil {
			t.Fatal(err)
		}
		a[0][0].Reset, b[0][0].Reset = 0, 0
		a[0][0].RetryAfter, b[0][0].RetryAfter = 0, 0 // the two calls are made at different times
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("call %d, cost %d:\nredis     %+v\nreserving %+v", i, cost, a, b)
		}
	}
	rc := res.Inner().(*RedisStore).Client()
	res.sweep(now, true)
	if p, q := counter(t, rc, "review:huge:p:{k}"), counter(t, rc, "review:huge:r:{k}"); p != q {
		t.Errorf("counters after giving back: redis store %d, reserving store %d", p, q)
	}
}

// TestReservingBigCostDenialDeniesNoOther: a check of cost > 1 that asks for units goes native:
// INCRBY cost+reserve first, DECRBY after the whole pipeline's replies. When it is denied
// with units left (cost > what is left), the counter stays above the limit meanwhile, and
// every other check on that counter in the same pipeline (or in another instance's pipeline
// in that interval) is denied although it fits. On one instance, two groups on one counter
// in one call ([cost 30], [cost 1], what two concurrent requests batched together or one
// request with two equal descriptors give): the Redis store admits the cost-1 check, the
// reserving store denies it.
func TestReservingBigCostDenialDeniesNoOther(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	plain := redisStoreFor(t, mustClient(t, r.Addr))
	res := newReservingStore(t, r.Addr, time.Second, clock)
	const limit = 1000
	p, q := fixedCheck("review:big:p:{k}", limit, now), fixedCheck("review:big:r:{k}", limit, now)
	// Same history on both: the reserving store gets to a state where it asks for units.
	admitted, reserve := readyToAsk(t, res, now, q, 5)
	for i := uint64(0); i < admitted; i++ {
		if _, err := plain.Eval(context.Background(), now, [][]Check{{p}}); err != nil {
			t.Fatal(err)
		}
	}
	left := limit - admitted
	t.Logf("admitted %d, %d left, next visit asks %d", admitted, left, reserve)
	big := func(c Check) Check { c.Cost = left + 1; return c }
	a, err := plain.Eval(context.Background(), now, [][]Check{{big(p)}, {p}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := res.Eval(context.Background(), now, [][]Check{{big(q)}, {q}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("[cost %d], [cost 1] on one counter with %d left:\nredis     %+v\nreserving %+v", left+1, left, a, b)
	}
}

// TestReservingNativeOnlyForCostOne: the mechanism behind
// TestReservingBigCostDenialDeniesNoOther, on the RedisStore's native path alone: a denied
// cost-31 check sent with Reserve 1 (what ReservingStore sends) is charged 32 by its INCRBY
// and only taken back by the DECRBY after the pipeline's replies; a cost-1 check on the same
// counter in between (later in the same pipeline, or another instance's pipeline in that
// interval) is denied while 30 units are left.
func TestReservingNativeOnlyForCostOne(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := redisStoreFor(t, mustClient(t, r.Addr))
	c := fixedCheck("review:native:{k}", 100, now)
	rc := s.Client()
	if err := rc.Set(context.Background(), c.Key, 70, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	big := c
	big.Cost, big.Extra = 31, 1 // what ReservingStore sends for a cost-31 request that asks for a unit
	rs, err := s.Eval(context.Background(), now, [][]Check{{big}, {c}})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0][0].Allowed {
		t.Fatalf("cost 31 with 30 left admitted: %+v", rs[0][0])
	}
	if !rs[1][0].Allowed {
		t.Errorf("cost 1 with 30 left denied (the denied cost-31 charge was still on the counter): %+v", rs[1][0])
	}
}

// TestReservingOneInstanceBurst: one instance, exactly limit requests of cost 1 from
// concurrent callers on a fresh counter: the Redis store admits them all (a call is denied
// only once the counter is at the limit), so the reserving store must too. It does not: a
// visit X that did not ask for units (another visit Y of the same lease is asking: pending) is
// denied by Redis because Y's reservation took the last units, and when X's answer is handled
// before Y's (two goroutines racing for s.mu after the same or concurrent pipelines), the
// "denied ... while units reserved by another request of this instance came in" branch finds
// l.avail == 0 and X is denied; Y's units then sit unused in the lease. This is a race: the
// test repeats the burst until it shows (it does within a few rounds here).
func TestReservingOneInstanceBurst(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	res := newReservingStore(t, r.Addr, time.Minute, clock)
	for round := 0; round < 40; round++ {
		limit := []uint64{200, 500, 1000, 2000}[round%4]
		c := fixedCheck(fmt.Sprintf("review:burst%d:{k}", round), limit, now)
		const callers = 32
		var denied atomic.Int64
		var wg sync.WaitGroup
		var next atomic.Int64
		for w := 0; w < callers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(limit) {
					rs, err := res.Eval(context.Background(), now, [][]Check{{c}})
					if err != nil {
						t.Error(err)
						return
					}
					if !rs[0][0].Allowed {
						denied.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if denied.Load() != 0 {
			res.mu.Lock()
			held := res.leases[c.Key].avail
			res.mu.Unlock()
			t.Fatalf("round %d: limit %d, %d concurrent calls on one instance: %d denied; the instance still holds %d units, counter %d",
				round, limit, limit, denied.Load(), held, counter(t, res.Inner().(*RedisStore).Client(), c.Key))
		}
	}
}

// TestReservingFailedRequestUnitsGoBack: the deterministic form of
// TestReservingCallerGivesUpUnitsGoBack. A request with two groups: a fixed-window
// check that asks for units (native, succeeds, Reserved > 0) and another group whose script
// fails (here WRONGTYPE; on a Redis Cluster, any node of the other group's slot failing).
// RedisStore.run sets op.err for the whole request, ReservingStore.Eval returns the error and
// drops the successful native result: its reserved units are charged to the counter, not
// held, and never given back.
func TestReservingFailedRequestUnitsGoBack(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := reviewStore(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	c := fixedCheck("review:partial:{k}", 10000, now)
	admitted, reserve := readyToAsk(t, a, now, c, 50)
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	bad := Check{Key: "review:partial:{bad}", Alg: AlgSlidingWindow, Limit: 10, Period: 1_000_000, Cost: 1}
	if err := rc.Set(context.Background(), bad.Key, "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Eval(context.Background(), now, [][]Check{{c}, {bad}}); err == nil {
		t.Fatal("no error")
	}
	a.Sweep(now + 300_000)
	a.Close()
	// The failed request's own cost stays charged, as with the plain store (its native
	// INCRBY ran); the units reserved with it must not.
	if v, want := counter(t, rc, c.Key), int64(admitted+1); v != want {
		t.Errorf("counter %d after a gave everything back, want %d: the %d units reserved with the failed request are lost for the window", v, want, reserve)
	}
}

// TestReservingStressManyInstances: 4 reserving instances (and a plain Redis store as a fifth
// replica), random costs 0-3, several counters and limits, concurrent callers, occasional
// sweeps after the hold. Per counter: never more than the limit admitted; while units are
// held, the counter equals admitted + held; after Close, it equals admitted.
func TestReservingStressManyInstances(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	var stores []Store
	var reserving []*ReservingStore
	for i := 0; i < 4; i++ {
		s := newReservingStore(t, r.Addr, 200*time.Millisecond, clock)
		stores = append(stores, s)
		reserving = append(reserving, s)
	}
	stores = append(stores, redisStoreFor(t, mustClient(t, r.Addr)))
	limits := []uint64{1, 7, 100, 500, 3000}
	checks := make([]Check, len(limits))
	for i, l := range limits {
		checks[i] = fixedCheck(fmt.Sprintf("review:stress%d:{k}", i), l, now)
	}
	admitted := make([]atomic.Uint64, len(limits))
	var nowV atomic.Int64
	nowV.Store(now)
	var wg sync.WaitGroup
	for w := 0; w < 40; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			s := stores[w%len(stores)]
			for i := 0; i < 400; i++ {
				k := rng.Intn(len(limits))
				c := checks[k]
				c.Cost = []uint64{1, 1, 1, 1, 2, 3, 0}[rng.Intn(7)]
				groups := [][]Check{{c}}
				if rng.Intn(8) == 0 { // sometimes a second group on another counter
					c2 := checks[(k+1)%len(checks)]
					groups = append(groups, []Check{c2})
				}
				rs, err := s.Eval(context.Background(), nowV.Load(), groups)
				if err != nil {
					t.Error(err)
					return
				}
				for gi, g := range groups {
					if rs[gi][0].Allowed {
						for j := range checks {
							if checks[j].Key == g[0].Key {
								admitted[j].Add(g[0].Cost)
							}
						}
					}
				}
				if rng.Intn(100) == 0 {
					reserving[rng.Intn(len(reserving))].Sweep(nowV.Load() + 300_000)
				}
			}
		}(w)
	}
	wg.Wait()
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	for i, c := range checks {
		var held uint64
		for _, s := range reserving {
			s.mu.Lock()
			if l := s.leases[c.Key]; l != nil {
				held += l.avail
			}
			s.mu.Unlock()
		}
		adm := admitted[i].Load()
		if adm > c.Limit {
			t.Errorf("counter %d (limit %d): admitted %d", i, c.Limit, adm)
		}
		if v := counter(t, rc, c.Key); v != int64(adm+held) {
			t.Errorf("counter %d (limit %d): Redis %d, admitted %d + held %d", i, c.Limit, v, adm, held)
		}
	}
	for _, s := range reserving {
		s.Close()
	}
	for i, c := range checks {
		if v := counter(t, rc, c.Key); v != int64(admitted[i].Load()) {
			t.Errorf("counter %d after Close: %d, admitted %d", i, v, admitted[i].Load())
		}
	}
}

// TestReservingStressRolloverAndLimitChanges: 3 reserving instances and concurrent callers over
// several 200ms windows (time advances with the calls), two rules whose limit flips between
// two values every 50ms (a config change that keeps the key), costs 0-3, sweeps after the
// hold. Per window: never more admitted than the larger limit, the counter in Redis never
// above it, and for the last window, once the instances close, the counter equals what was
// admitted (earlier windows may keep units a lease held when its window ended: nobody can
// use them any more).
func TestReservingStressRolloverAndLimitChanges(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	start := base.UnixMicro()
	var reserving []*ReservingStore
	for i := 0; i < 3; i++ {
		reserving = append(reserving, newReservingStore(t, r.Addr, 30*time.Millisecond, clock))
	}
	const period = 200_000
	type rule struct{ hi, lo uint64 }
	rules := []rule{{60, 40}, {400, 150}}
	limitAt := func(ru rule, now int64) uint64 {
		if (now/50_000)%2 == 0 {
			return ru.hi
		}
		return ru.lo
	}
	var clockNow atomic.Int64
	clockNow.Store(start)
	var mu sync.Mutex
	admitted := map[string]uint64{}
	var wg sync.WaitGroup
	for w := 0; w < 24; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + 100))
			s := reserving[w%len(reserving)]
			for i := 0; i < 300; i++ {
				now := clockNow.Add(int64(rng.Intn(300)))
				ri := rng.Intn(len(rules))
				ws := now - now%period
				c := Check{Key: fmt.Sprintf("review:roll%d:{k}:%d", ri, ws), Alg: AlgFixedWindow, Limit: limitAt(rules[ri], now),
					Period: period, WindowEnd: ws + period, Cost: []uint64{1, 1, 1, 2, 3, 0}[rng.Intn(6)]}
				rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
				if err != nil {
					t.Error(err)
					return
				}
				if rs[0][0].Allowed {
					mu.Lock()
					admitted[c.Key] += c.Cost
					mu.Unlock()
				}
				if rng.Intn(50) == 0 {
					s.Sweep(now)
				}
			}
		}(w)
	}
	wg.Wait()
	end := clockNow.Load()
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	for _, s := range reserving {
		s.sweep(end, true)
	}
	last := end - end%period
	windows := 0
	for key, n := range admitted {
		var ri int
		var ws int64
		if _, err := fmt.Sscanf(key, "review:roll%d:{k}:%d", &ri, &ws); err != nil {
			t.Fatal(err)
		}
		windows++
		v := counter(t, rc, key)
		if n > rules[ri].hi || uint64(v) > rules[ri].hi {
			t.Errorf("%s: admitted %d, counter %d, limit at most %d", key, n, v, rules[ri].hi)
		}
		if ws == last && v != int64(n) {
			t.Errorf("%s (last window): counter %d after giving back, admitted %d", key, v, n)
		}
		if v < int64(n) {
			t.Errorf("%s: counter %d below admitted %d", key, v, n)
		}
	}
	t.Logf("%d counters over %d µs", windows, end-start)
}

// TestReservingStressCluster: the many-instance stress on a 3-node Redis Cluster.
func TestReservingStressCluster(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	url := clusterURL(addrs)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	var reserving []*ReservingStore
	for i := 0; i < 3; i++ {
		c, err := NewRedisClient(url)
		if err != nil {
			t.Fatal(err)
		}
		s := NewReservingStore(NewRedisStore(c, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: time.Minute, Clock: clock})
		t.Cleanup(func() { s.Close() })
		reserving = append(reserving, s)
	}
	limits := []uint64{5, 60, 300}
	var checks []Check
	for i, l := range limits {
		for k := 0; k < 3; k++ { // keys on different slots
			checks = append(checks, fixedCheck(fmt.Sprintf("review:cl%d:{key%d}", i, k), l, now))
		}
	}
	admitted := make([]atomic.Uint64, len(checks))
	var wg sync.WaitGroup
	for w := 0; w < 18; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + 7))
			s := reserving[w%len(reserving)]
			for run, i := 0, 0; run < 20 && i < 250; i++ {
				k := rng.Intn(len(checks))
				c := checks[k]
				c.Cost = []uint64{1, 1, 1, 2}[rng.Intn(4)]
				k2 := (k + 1 + rng.Intn(len(checks)-1)) % len(checks)
				groups := [][]Check{{c}, {checks[k2]}} // two slots in one request
				rs, err := s.Eval(context.Background(), now, groups)
				if err != nil {
					t.Error(err)
					return
				}
				ok := false
				for gi, j := range []int{k, k2} {
					if rs[gi][0].Allowed {
						admitted[j].Add(groups[gi][0].Cost)
						ok = true
					}
				}
				if ok {
					run = 0
				} else {
					run++
				}
			}
		}(w)
	}
	wg.Wait()
	c, err := NewRedisClient(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, s := range reserving {
		s.Close()
	}
	for i, ch := range checks {
		n := admitted[i].Load()
		v := counter(t, c, ch.Key)
		if n > ch.Limit {
			t.Errorf("%s: admitted %d, limit %d", ch.Key, n, ch.Limit)
		}
		if v != int64(n) {
			t.Errorf("%s: counter %d after Close, admitted %d", ch.Key, v, n)
		}
	}
}

// TestReservingDifferentialSharedKeys: one instance, the reserving store against the Redis store
// over random requests of 1-3 groups drawn from a few counters, so one request often carries
// the same counter in several groups (single-check groups and groups of a fixed window with
// another algorithm), costs 0-3, and a limit that a config change flips between two values.
// Answers must be identical, field by field. They are not: (1) the reserving store decides a
// request's groups in group order (local admissions first), the Redis store runs its native
// groups before its script groups, so two groups on one counter get each other's Remaining;
// (2) worse, a group's Remaining is computed as Redis's Remaining + l.avail before the
// reservation another group of the same request obtained (and Redis already counted) is
// added to l.avail: Remaining comes out low by that reservation (see
// TestReservingRemainingWithSiblingReservation).
func TestReservingDifferentialSharedKeys(t *testing.T) {
	r := itest.StartRedis(t)
	plain := redisStoreFor(t, mustClient(t, r.Addr))
	clock := newFakeClock(base)
	res := newReservingStore(t, r.Addr, 300*time.Millisecond, clock)
	rng := rand.New(rand.NewSource(11))
	now := base.UnixMicro()
	limitOf := func(k int, flip bool) uint64 {
		l := []uint64{3, 40, 300, 2000}[k]
		if flip {
			l = l * 3 / 2
		}
		return l
	}
	mk := func(prefix string, k int, alg Algorithm, cost uint64, flip bool) Check {
		c := Check{Key: fmt.Sprintf("%s{k%d}:%c", prefix, k, alg), Alg: alg, Limit: limitOf(k, flip), Cost: cost}
		switch alg {
		case AlgFixedWindow:
			c.Period = 2_000_000
			c.WindowEnd = now - now%c.Period + c.Period
			c.Key += fmt.Sprintf(":%d", c.WindowEnd)
		case AlgSlidingWindow:
			c.Period = 1_000_000
		default:
			c.Period, c.Burst = 50_000, 4
		}
		return c
	}
	flip := false
	mismatches := 0
	for step := 0; step < 4000 && mismatches < 5; step++ {
		now += int64(rng.Intn(3_000))
		if rng.Intn(300) == 0 {
			flip = !flip
		}
		if rng.Intn(500) == 0 {
			now += int64(rng.Intn(1_500_000))
		}
		if rng.Intn(60) == 0 {
			res.Sweep(now)
		}
		n := 1 + rng.Intn(3)
		type spec struct {
			k     int
			cost  uint64
			multi bool
		}
		var specs []spec
		for i := 0; i < n; i++ {
			cost := uint64(1)
			if x := rng.Intn(10); x == 0 {
				cost = 0
			} else if x == 1 {
				cost = uint64(2 + rng.Intn(2))
			}
			specs = append(specs, spec{rng.Intn(4), cost, rng.Intn(5) == 0})
		}
		build := func(prefix string) [][]Check {
			var gs [][]Check
			for _, sp := range specs {
				g := []Check{mk(prefix, sp.k, AlgFixedWindow, sp.cost, flip)}
				if sp.multi {
					g = append(g, mk(prefix, sp.k, AlgTokenBucket, sp.cost, flip))
				}
				gs = append(gs, g)
			}
			return gs
		}
		a, err := plain.Eval(context.Background(), now, build("p:"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := res.Eval(context.Background(), now, build("r:"))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			mismatches++
			t.Errorf("step %d, groups %+v:\nredis     %+v\nreserving %+v", step, specs, a, b)
		}
	}
}

// TestReservingRemainingWithSiblingReservation: one request, two groups on counter K: a
// group of K with a token bucket (it takes K's last held unit) and a single check of K (it
// finds no unit, and asks for a reservation r). Redis runs the native single check first
// (INCRBY 1+r), then the group's script, whose Remaining counts the r units as used. Eval
// handles the takings in group order and computes the group's Remaining as Redis's + l.avail
// ("r.Remaining = min(r.Remaining+l.avail, limit)") before the single check's r units are
// added to l.avail: the group's Remaining is r too low compared with the Redis store. The
// same happens across concurrent requests (and then, near the limit, the denial of
// TestReservingOneInstanceBurst).
func TestReservingRemainingWithSiblingReservation(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	plain := redisStoreFor(t, mustClient(t, r.Addr))
	res := newReservingStore(t, r.Addr, time.Second, clock)
	const limit = 10000
	p, q := fixedCheck("review:sib:p:{k}", limit, now), fixedCheck("review:sib:r:{k}", limit, now)
	// Get the reserving store to hold exactly one unit with a reservation of at least 5 due.
	var admitted uint64
	for i := 0; ; i++ {
		if i > 5000 {
			t.Fatal("state not reached")
		}
		res.mu.Lock()
		l := res.leases[q.Key]
		ready := l != nil && l.avail == 1 && l.asking == nil && l.visit != 0 && min(res.size(l, now), (limit-min(l.count, limit))/16) >= 5
		res.mu.Unlock()
		if ready {
			break
		}
		if _, err := res.Eval(context.Background(), now, [][]Check{{q}}); err != nil {
			t.Fatal(err)
		}
		if _, err := plain.Eval(context.Background(), now, [][]Check{{p}}); err != nil {
			t.Fatal(err)
		}
		admitted++
	}
	tb := func(prefix string) Check {
		return Check{Key: prefix + "{k}:tb", Alg: AlgTokenBucket, Limit: 100, Period: 10_000, Burst: 100, Cost: 1}
	}
	a, err := plain.Eval(context.Background(), now, [][]Check{{p, tb("review:sib:p:")}, {p}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := res.Eval(context.Background(), now, [][]Check{{q, tb("review:sib:r:")}, {q}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d admissions: redis %+v", admitted, a)
	// Each store's Remaining for K, whatever the order within the request: the lowest of the
	// two groups is limit-admitted-2 on both.
	lowA, lowB := min(a[0][0].Remaining, a[1][0].Remaining), min(b[0][0].Remaining, b[1][0].Remaining)
	if lowA != lowB {
		t.Errorf("two groups on one counter: lowest Remaining %d, Redis store %d (limit %d, %d admitted before + 2):\nredis     %+v\nreserving %+v",
			lowB, lowA, limit, admitted, a, b)
	}
}

// TestReservingFailedGiveBackNotInNewLease: the limit of a counter changes (a config
// change keeps the key) while Redis is down. leaseFor drops the old lease and queues its units
// for a give-back; the give-back fails, and giveBack puts the units into "s.leases[u.key]",
// which is now the lease of the NEW limit. That lease then admits them locally against the
// new limit although the counter is already past it, answering Remaining as if the window
// were fresh; the Redis store would fail (fail mode) while Redis is down and deny after.
func TestReservingFailedGiveBackNotInNewLease(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := reviewStore(t, r.Addr, time.Minute, 300*time.Millisecond, clock)
	c := fixedCheck("review:newlease:{k}", 1000, now)
	var admitted uint64
	for i := 0; i < 1000 && (a.leases[c.Key] == nil || a.leases[c.Key].avail < 5); i++ {
		if rs, err := a.Eval(context.Background(), now, [][]Check{{c}}); err != nil || !rs[0][0].Allowed {
			t.Fatalf("call %d: %+v %v", i, rs, err)
		}
		admitted++
	}
	held := a.leases[c.Key].avail
	r.Stop()
	lowered := c
	lowered.Limit = 2 // already exceeded: admitted > 2
	if admitted <= lowered.Limit {
		t.Fatalf("admitted %d", admitted)
	}
	if _, err := a.Eval(context.Background(), now, [][]Check{{lowered}}); err == nil {
		t.Fatal("no error with Redis down")
	}
	rs, err := a.Eval(context.Background(), now, [][]Check{{lowered}})
	if err == nil && rs[0][0].Allowed {
		t.Errorf("limit lowered to %d with %d admitted (Redis down, %d units held for the old limit): admitted %+v",
			lowered.Limit, admitted, held, rs[0][0])
	}
}
