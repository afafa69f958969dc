package ratelimit

// Fourth adversarial review, of 72efb88 (the leader hands its batch to a goroutine when a
// batch-mate outlives it; abandoned reservations go back on a goroutine; cached denials report
// the store's reset; a request's own give-back on a detached context). Every test runs against
// a real redis-server. All but TestCachedDenialFixedAndShadow failed on 72efb88 (their comments
// tell why) and guard the fixes.

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// r4Step is one request of a cache comparison: at base+at, with cost.
type r4Step struct {
	at   time.Duration
	cost uint32
}

// r4Compare runs steps against three services on one Redis and one clock, with one limit:
// "truth" (no over-limit cache), "plain" (Redis store with the cache) and "reserving" (hold
// 1s, with the cache); every answer (code, remaining, reset, every header) must be the truth's.
func r4Compare(t *testing.T, addr, prefix string, rule ir.RateLimitRule, shadow bool, steps []r4Step) {
	t.Helper()
	clock := newFakeClock(base)
	d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
		Key: "k", Name: "lim", Limits: []ir.RateLimitRule{rule}, Headers: allHeaders, ShadowMode: shadow,
	}}}
	truth := r3Service(t, redisStoreFor(t, mustClient(t, addr)), clock, prefix+"n:", true, d)
	plain := r3Service(t, redisStoreFor(t, mustClient(t, addr)), clock, prefix+"p:", false, d)
	res := r3Service(t, newReservingStore(t, addr, time.Second, clock), clock, prefix+"r:", false, d)
	ask := func(s *Service, cost uint32) string {
		q := req("test", []string{"k", "v"})
		q.HitsAddend = cost
		resp, err := s.ShouldRateLimit(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		return r3Answer(resp)
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
	steps := []r4Step{{0, 1}, {10 * time.Second, 5}, {10*time.Second + 100*time.Millisecond, 5}, {20 * time.Second, 5}}
	for _, tc := range []struct {
		name string
		rule ir.RateLimitRule
	}{
		{"sliding", ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 3, Period: time.Minute}},
		{"token", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Minute}},
		{"leaky", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 3, Period: time.Minute, Burst: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r4Compare(t, r.Addr, "r4over:"+tc.name+":", tc.rule, false, steps)
		})
	}
}

// TestCachedDenialAfterSmallerCost: the over-limit cache keeps one entry per
// counter (overCache.put overwrites it, overCache.denied uses it for any cost >= e.cost) and
// nothing drops it when the store admits a smaller request. Its until (retry-after) and, since
// 72efb88, its reset are what the store said at the denial; then:
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
		steps []r4Step
	}{
		{"token/admitted", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute},
			[]r4Step{{0, 8}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}}},
		{"sliding/admitted", ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 10, Period: time.Minute},
			[]r4Step{{0, 8}, {time.Second, 5}, {2 * time.Second, 2}, {3 * time.Second, 5}}},
		{"leaky/admitted", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Minute, Burst: 10},
			[]r4Step{{0, 8}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}}},
		{"token/overwritten", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute},
			[]r4Step{{0, 9}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r4Compare(t, r.Addr, "r4small:"+tc.name+":", tc.rule, false, tc.steps)
		})
	}
}

// TestCachedDenialFixedAndShadow: what agrees: fixed windows (cost 1, cost > 1 then
// smaller, cost over the limit) and shadow mode, with and without reservations.
func TestCachedDenialFixedAndShadow(t *testing.T) {
	r := itest.StartRedis(t)
	fixed := ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 10, Period: time.Minute}
	steps := []r4Step{{0, 8}, {0, 5}, {0, 2}, {100 * time.Millisecond, 5}, {200 * time.Millisecond, 1},
		{300 * time.Millisecond, 20}, {400 * time.Millisecond, 20}, {600 * time.Millisecond, 5}}
	t.Run("fixed", func(t *testing.T) { r4Compare(t, r.Addr, "r4fx:", fixed, false, steps) })
	t.Run("fixed-shadow", func(t *testing.T) { r4Compare(t, r.Addr, "r4fxs:", fixed, true, steps) })
	tok := ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Minute}
	t.Run("token-shadow", func(t *testing.T) {
		r4Compare(t, r.Addr, "r4tks:", tok, true, []r4Step{{0, 1}, {0, 1}, {0, 1}, {0, 1}, {time.Second, 1}})
	})
}

// TestReservingRepeatedCounterLeavesAtDeadline: 72efb88 gives back the units a
// request releases (a counter named twice, a lease of another limit) on
// context.WithoutCancel(ctx) (reserve.go Eval, "s.giveBack(context.WithoutCancel(ctx), back)"),
// bounded only by the store's Timeout, and waits for it on the caller's goroutine before
// sending the request. A caller with a deadline therefore stays until the give-back ends (up to
// Timeout, 5s here, 2s by default), not its deadline (RedisOptions.Timeout: "each caller gives
// up … at its own deadline"; 3dc24a5 had bounded this very give-back by the deadline for that
// reason). Here: a holds units of a counter; Redis is busy 800ms; a request with a 100ms
// deadline names the counter twice: its answer comes after ~800ms.
func TestReservingRepeatedCounterLeavesAtDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := newReservingStore(t, r.Addr, time.Minute, clock)
	c := fixedCheck("r4dup:{k}", 1000, now)
	r3Hold(t, a, now, c, 5)
	done := blockRedis(t, r.Addr, 800*time.Millisecond)
	defer func() { <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := a.Eval(ctx, now, [][]Check{{c}, {c}})
	took := time.Since(start)
	t.Logf("%v after %v", err, took)
	if took > 400*time.Millisecond {
		t.Errorf("a request with a 100ms deadline naming a counter twice got its answer after %v (it waited for the give-back of the units held)", took)
	}
}

// TestRedisCloseGivesBackAbandonedReservation: run() now gives the units reserved for an
// abandoned call back on a goroutine of its own ("go func() { … s.returnUnits(ctx, late) }()"),
// after which the pipeline slot is released; Close waits only for running == 0, then closes
// the client. The give-back goroutine is not waited for: when it has not written its EVAL yet
// (here the network is 100ms slow for it), the client is closed under it and the units stay
// charged to the counter for the rest of the window (before 72efb88 the give-back ran under the
// slot, so Close waited for it; "Close waits for calls in flight" and "units of an abandoned
// call go back" were fixes of the first review). ReservingStore.Close ends in the same
// RedisStore.Close. Here: a call reserving 50 units gives up at 100ms while Redis is busy
// 400ms; Close right after: the counter ends at 51, not 1 (the abandoned call's own cost).
func TestRedisCloseGivesBackAbandonedReservation(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	slow := &slowWrites{marker: []byte("EXISTS"), delay: 100 * time.Millisecond} // returnScript's text
	c0, err := NewRedisClient(r.Addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	c0.(*redis.Client).Options().Dialer = slow.dial
	s := NewRedisStore(c0, RedisOptions{Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	c := fixedCheck("r4close:{k}", 1000, now)
	if _, err := s.Eval(context.Background(), now, [][]Check{{fixedCheck("r4close:warm:{k}", 10, now)}}); err != nil {
		t.Fatal(err)
	}
	done := blockRedis(t, r.Addr, 400*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	rc := c
	rc.Extra = 50
	_, err = s.Eval(ctx, now, [][]Check{{rc}})
	cancel()
	if err == nil {
		t.Fatal("a call that gave up was answered")
	}
	s.Close() // waits for the pipeline in flight
	<-done
	time.Sleep(300 * time.Millisecond) // any give-back has run by now
	cl := mustClient(t, r.Addr)
	defer cl.Close()
	if v := counter(t, cl, c.Key); v != 1 {
		t.Errorf("counter %d after Close, want 1 (the abandoned call's cost): the %d units reserved for it were never given back", v, v-1)
	}
}

// TestRedisReservationOutlivesLeader: a caller that leads (takes a pipeline slot)
// does not always find its own call in the queue: with Workers 2 the other slot's sender may
// have taken it meanwhile (during the leader's Window, or its Gosched under load). The leader
// then sends whatever is queued, possibly a call that reserves units (only callers that lead
// send reserving calls on a goroutine). outlives returns false when the leader has no deadline
// ("the caller itself waits up to the store's timeout"), and send runs the batch with
// run(batch, caller=true), so the reserving call's own deadline becomes the pipeline's
// ("(!caller && reserves(op))" is false): Redis slow past it, the pipeline times out after the
// INCRBY was written, Redis runs it, nobody reads the reply: 1+reserve units charged, never
// given back (the same call in a batch run with caller=false waits for the reply and gives its
// units back, as TestReservingCallerGivesUpUnitsGoBack requires).
// Here: Workers 2, Window 100ms; X (no deadline) leads slot 1 and sleeps; L (no deadline)
// leads slot 2 50ms later; X wakes and takes [X, L]; R (reserve 50, deadline 100ms) queues; L
// wakes and sends [R] alone with R's deadline; Redis is busy 700ms: R's counter ends at 51.
func TestRedisReservationOutlivesLeader(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := NewRedisStore(mustClient(t, r.Addr), RedisOptions{Workers: 2, Window: 100 * time.Millisecond, Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	// Warm the pipeline connections up (a connection dialed while Redis is busy never gets
	// to write: its HELLO waits).
	warm := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			_, err := s.Client().Pipelined(context.Background(), func(p redis.Pipeliner) error {
				return p.Do(context.Background(), "blpop", "r4nb:none", 0.05).Err()
			})
			warm <- err
		}()
	}
	for i := 0; i < 3; i++ {
		if err := <-warm; err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}
	running := func() (int, int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.running, len(s.queue)
	}
	waitFor := func(what string, ok func(run, q int) bool) {
		t.Helper()
		for i := 0; ; i++ {
			if ok(running()) {
				return
			}
			if i > 20000 {
				t.Fatalf("never: %s", what)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	done := blockRedis(t, r.Addr, 700*time.Millisecond)
	xDone, lDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(xDone)
		s.Eval(context.Background(), now, [][]Check{{fixedCheck("r4nb:x:{k}", 100, now)}})
	}()
	waitFor("X leads", func(run, q int) bool { return run == 1 })
	time.Sleep(50 * time.Millisecond)
	go func() {
		defer close(lDone)
		s.Eval(context.Background(), now, [][]Check{{fixedCheck("r4nb:l:{k}", 100, now)}})
	}()
	waitFor("L leads", func(run, q int) bool { return run == 2 })
	waitFor("X takes the queue", func(run, q int) bool { return q == 0 })
	c := fixedCheck("r4nb:r:{k}", 1000, now)
	c.Extra = 50
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	rStart := time.Now()
	_, err := s.Eval(ctx, now, [][]Check{{c}})
	t.Logf("R: %v after %v", err, time.Since(rStart))
	if err == nil {
		t.Fatal("R answered while Redis is busy")
	}
	<-xDone
	<-lDone
	<-done
	time.Sleep(200 * time.Millisecond) // any give-back has run
	cl := mustClient(t, r.Addr)
	defer cl.Close()
	t.Logf("batches by size %v", s.BatchSizes())
	if v := counter(t, cl, c.Key); v != 1 {
		t.Errorf("counter %d, want 1 (the abandoned call's cost): the %d units it reserved are lost for the window", v, v-1)
	}
}

// TestRedisLeaderDoesNotSleepWindow: with Window > 0 a caller that leads sleeps
// the Window on its own goroutine (send: "time.Sleep(s.opts.Window)") before outlives is even
// asked: a caller whose deadline is shorter than the Window gets its answer (its context error)
// only after the Window, although Redis is healthy and idle. Here Window 200ms, deadline
// 20ms: the answer comes after ~200ms.
func TestRedisLeaderDoesNotSleepWindow(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := NewRedisStore(mustClient(t, r.Addr), RedisOptions{Workers: 1, Window: 200 * time.Millisecond, Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Eval(ctx, now, [][]Check{{fixedCheck("r4win:{k}", 100, now)}})
	took := time.Since(start)
	t.Logf("%v after %v", err, took)
	if took > 100*time.Millisecond {
		t.Errorf("a caller with a 20ms deadline got its answer after %v (it slept the 200ms Window itself)", took)
	}
}

// TestRedisCanceledLeaderWithWindow: outlives treats a leader without a deadline as
// willing to wait up to the store's Timeout ("return false // the caller itself waits up to
// the store's timeout"), but a context without a deadline can still be canceled (a gRPC
// client that resets its stream, a parent that gives up). Such a leader runs its batch on its
// own goroutine, and the batch waits for a batch-mate without deadline: canceled at 100ms, the
// leader gets its context error only when Redis answers (~800ms; up to Timeout). Here Workers
// 1, Window 50ms; L (cancelable, no deadline) leads, Y (no deadline) joins its batch.
func TestRedisCanceledLeaderWithWindow(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := NewRedisStore(mustClient(t, r.Addr), RedisOptions{Workers: 1, Window: 50 * time.Millisecond, Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	if _, err := s.Eval(context.Background(), now, [][]Check{{fixedCheck("r4cancel:warm:{k}", 100, now)}}); err != nil {
		t.Fatal(err)
	}
	done := blockRedis(t, r.Addr, 800*time.Millisecond)
	defer func() { <-done }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lc, yDone := leaderAndMate(s, ctx, now, "r4cancel")
	time.Sleep(90 * time.Millisecond)
	cancel()
	a := <-lc
	<-yDone
	t.Logf("L: %v after %v", a.err, a.took)
	if a.took > 400*time.Millisecond {
		t.Errorf("a leader canceled at 100ms got its answer after %v (its batch-mate without deadline kept it)", a.took)
	}
}
