package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// TestReservingGiveBackWithLostReplyNotKept: a give-back whose reply is lost (a read
// timeout: Redis is slow, the command is already written) is counted as failed, so the units
// are put back into the lease (reserve.go giveBack, "l.avail += uint64(u.n)") although Redis
// does run the DECRBY. The instance then admits those units locally while the counter in
// Redis has already freed them for everyone else: over-admission across instances.
func TestReservingGiveBackWithLostReplyNotKept(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := reservingStoreTimeout(t, r.Addr, 200*time.Millisecond, 150*time.Millisecond, clock)
	b := reservingStoreTimeout(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	const limit = 1000
	c := fixedCheck("rsv:lost:{k}", limit, now)
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
	a := reservingStoreTimeout(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	const limit = 10000
	c := fixedCheck("rsv:gaveup:{k}", limit, now)
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
	a := reservingStoreTimeout(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	const limit = 10000
	c := fixedCheck("rsv:close:{k}", limit, now)
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
	a := reservingStoreTimeout(t, r.Addr, 200*time.Millisecond, 5*time.Second, clock)
	c := fixedCheck("rsv:partial:{k}", 10000, now)
	admitted, reserve := readyToAsk(t, a, now, c, 50)
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	bad := Check{Key: "rsv:partial:{bad}", Alg: AlgSlidingWindow, Limit: 10, Period: 1_000_000, Cost: 1}
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
	a := reservingStoreTimeout(t, r.Addr, time.Minute, 300*time.Millisecond, clock)
	c := fixedCheck("rsv:newlease:{k}", 1000, now)
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

// TestReservingClusterGiveBackRunsOnce: on a Redis Cluster, go-redis's ClusterClient
// re-sends a pipeline whose connection broke (EOF, reset) on a new connection, up to
// MaxRedirects (3) times: NewRedisClient sets MaxRetries = -1 ("commands are never
// retried") but that does not reach the cluster pipeline's retry loop
// (osscluster.go processPipeline / pipelineReadCmds: shouldRetry(io.EOF) is true). A
// give-back (RedisStore.returnUnits: EVAL of returnScript, a DECRBY) whose reply is lost after
// it ran is run a second time: the counter loses the held units twice, and the replicas
// together admit the limit plus what was held. Here: instance a holds n units, gives them
// back after the hold, the connection drops after Redis ran the give-back; instance b then
// takes everything left: admitted = limit + n.
func TestReservingClusterGiveBackRunsOnce(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	url := clusterURL(addrs)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	newStore := func(d *replyDropper) *ReservingStore {
		c, err := NewRedisClient(url) // the production options
		if err != nil {
			t.Fatal(err)
		}
		if d != nil {
			c.(*redis.ClusterClient).Options().Dialer = d.dial // before any node client exists
		}
		s := NewReservingStore(NewRedisStore(c, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: 200 * time.Millisecond, Clock: clock})
		t.Cleanup(func() { s.Close() })
		return s
	}
	drop := &replyDropper{marker: []byte("EXISTS")} // returnScript's text
	a, b := newStore(drop), newStore(nil)
	const limit = 1000
	c := fixedCheck("r2cl:give:{k}", limit, now)
	var admitted uint64
	for i := 0; a.leases[c.Key] == nil || a.leases[c.Key].avail < 10; i++ {
		if i > 1000 {
			t.Fatal("a holds nothing")
		}
		rs, err := a.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil || !rs[0][0].Allowed {
			t.Fatalf("a, call %d: %+v %v", i, rs, err)
		}
		admitted++
	}
	held := a.leases[c.Key].avail
	rc := b.Inner().(*RedisStore).Client()
	if v := counter(t, rc, c.Key); v != int64(admitted+held) {
		t.Fatalf("counter %d, want admitted %d + held %d", v, admitted, held)
	}
	drop.armed.Store(true)
	a.Sweep(now + 300_000) // the hold is over: a gives its units back
	if drop.fired.Load() != 1 {
		t.Fatalf("the give-back's reply was not dropped (fired %d)", drop.fired.Load())
	}
	before := admitted
	v := counter(t, rc, c.Key)
	admitted += drain(t, b, now, c)
	admitted += drain(t, a, now, c)
	if v != int64(before) || admitted > limit {
		t.Errorf("a held %d units (%d admitted) and gave them back; the connection dropped after Redis ran the give-back: counter %d afterwards, want %d; the replicas admitted %d in all, limit %d",
			held, before, v, before, admitted, limit)
	}
}

// TestReservingCallerLeavesAtDeadline: RedisStore.run claims every answer for its caller
// only after the give-back of units charged over the limit, so a caller whose context ends
// during that give-back abandons its call and leaves at its deadline; the pipeline of a call
// that asks for extra units runs on a goroutine of its own, and refunds them when nobody
// takes the answer. Here: a visit that asks for units is denied (another replica took the
// rest), so its 1+extra units go back in the same batch; Redis is slow (800ms) for that
// give-back; the caller's deadline is 100ms: it must get its answer at about 100ms.
func TestReservingCallerLeavesAtDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	slow := &slowWrites{marker: []byte("EXISTS"), delay: 800 * time.Millisecond} // returnScript's text
	c0, err := NewRedisClient(r.Addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	c0.(*redis.Client).Options().Dialer = slow.dial
	a := NewReservingStore(NewRedisStore(c0, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: time.Minute, Clock: clock})
	t.Cleanup(func() { a.Close() })
	const limit = 1000
	c := fixedCheck("r2deadline:{k}", limit, now)
	_, reserve := readyToAsk(t, a, now, c, 1)
	// Another replica takes everything left.
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	if err := rc.Set(context.Background(), c.Key, limit, redis.KeepTTL).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	rs, err := a.Eval(ctx, now, [][]Check{{c}})
	took := time.Since(start)
	t.Logf("visit asking %d units, denied: %+v %v after %v", reserve, rs, err, took)
	if took > 300*time.Millisecond {
		t.Errorf("a caller with a 100ms deadline got its answer after %v (the give-back of its denied units was slow)", took)
	}
}

// TestReservingHeldUnitsKeptWithCanceledRequest: the units a request releases (a counter
// named twice in the request, or a lease of another limit) are given back on a context of
// their own, not the request's: a request whose context is already done (the client went
// away, Envoy's timeout passed) would otherwise release the lease's units and never send
// their give-back (go-redis fails it on the context before writing), and a context error is
// not "surely not sent", so the units would stay charged to the counter, held by nobody,
// until the window ends. Here: a holds n units of a counter of
// limit 1000; one canceled request names the counter twice; then everybody drains the
// counter: exactly 1000 admitted.
func TestReservingHeldUnitsKeptWithCanceledRequest(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := newReservingStore(t, r.Addr, time.Minute, clock)
	b := newReservingStore(t, r.Addr, time.Minute, clock)
	const limit = 1000
	c := fixedCheck("cancel:{k}", limit, now)
	admitted := holdUnits(t, a, now, c, 10)
	a.mu.RLock()
	held := a.leases[c.Key].avail
	a.mu.RUnlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Eval(ctx, now, [][]Check{{c}, {c}}); err == nil {
		t.Fatal("a canceled request was answered")
	}
	a.mu.RLock()
	still := a.leases[c.Key].avail
	a.mu.RUnlock()
	v := counter(t, b.Inner().(*RedisStore).Client(), c.Key)
	before := admitted
	admitted += drain(t, b, now, c)
	admitted += drain(t, a, now, c)
	if admitted != limit {
		t.Errorf("a held %d units (%d admitted); after a canceled request naming the counter twice a holds %d and the counter is %d; everybody drains: %d admitted in all, limit %d",
			held, before, still, v, admitted, limit)
	}
}

// TestReservingRepeatedCounterLeavesAtDeadline: the give-back of the units a request
// releases (a counter named twice, a lease of another limit) runs on a goroutine of its own,
// bounded by the store's Timeout, and the request waits for it or for its own deadline,
// whichever comes first (RedisOptions.Timeout: "each caller gives up … at its own
// deadline"); the give-back itself is not cut short (see
// TestReservingHeldUnitsKeptWithCanceledRequest). Here: a holds units of a counter; Redis is busy 800ms; a request with a 100ms
// deadline names the counter twice: its answer comes after ~800ms.
func TestReservingRepeatedCounterLeavesAtDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := newReservingStore(t, r.Addr, time.Minute, clock)
	c := fixedCheck("dup:{k}", 1000, now)
	holdUnits(t, a, now, c, 5)
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

// refundsNotSent is the Redis store whose refunds never leave this instance, as when no
// connection to Redis can be made (a dial error, the pool's timeout under load): each is
// reported surely not sent. during runs first, once: what this instance does meanwhile.
type refundsNotSent struct {
	*RedisStore
	during func()
}

func (s *refundsNotSent) Refund(ctx context.Context, units []Refund) (int64, []int) {
	if f := s.during; f != nil {
		s.during = nil
		f()
	}
	unsent := make([]int, len(units))
	for i := range unsent {
		unsent[i] = i
	}
	return 0, unsent
}

// TestReservingUnsentGiveBackWithVisitMeanwhile: a lease gives its units back after the hold,
// and the give-back never reaches Redis; meanwhile a request of the same instance visits the
// counter, which another instance has filled, so the lease learns the counter (the units
// included: they are still charged). The units go back into the lease, and the lease must
// still hold avail ≤ count ≤ limit (invariant 2), and answer the next request admitted from
// them with the remaining count of the counter.
func TestReservingUnsentGiveBackWithVisitMeanwhile(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	inner := &refundsNotSent{RedisStore: NewRedisStore(mustClient(t, r.Addr), RedisOptions{Timeout: 5 * time.Second})}
	const hold = 200 * time.Millisecond
	a := NewReservingStore(inner, ReserveOptions{Hold: hold, Clock: clock})
	t.Cleanup(func() { a.Close() })
	const limit = 1000
	c := fixedCheck("rsv:unsent:{k}", limit, now)
	holdUnits(t, a, now, c, 4)
	held := a.held(c.Key)
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	// Another instance takes everything left.
	if err := rc.Set(context.Background(), c.Key, limit, redis.KeepTTL).Err(); err != nil {
		t.Fatal(err)
	}
	var visit Result
	inner.during = func() {
		rs, err := a.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Error(err)
			return
		}
		visit = rs[0][0]
	}
	a.Sweep(now + hold.Microseconds())
	if visit.Allowed {
		t.Fatalf("a visit to a full counter was admitted: %+v", visit)
	}
	if got := a.held(c.Key); got != held {
		t.Fatalf("held %d after the give-back that was not sent, want %d", got, held)
	}
	if err := a.checkInvariants(now, false); err != nil {
		t.Error(err)
	}
	rs, err := a.Eval(context.Background(), now, [][]Check{{c}})
	if err != nil {
		t.Fatal(err)
	}
	// The counter holds the limit, of which this instance still holds held-1 units.
	if want := held - 1; !rs[0][0].Allowed || rs[0][0].Remaining != want {
		t.Errorf("admitted from the units held: %+v, want allowed with %d remaining", rs[0][0], want)
	}
}
