package ratelimit

// Second adversarial review of fixed-window reservations: each test broke the version it
// reviewed (the comment tells the scenario and what was wrong) and guards the fix. Every test
// runs against a real redis-server.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// TestReservingCachedDenialReportsTrueReset: one instance, requests one at a time, a fixed window of 3
// a minute. The service caches the denial of the 4th request; with reservations the cache
// entry's expiry is capped at 1.25 × hold (service.go respond: "until = min(until,
// now+s.holdCap)"), and a cached denial reports its expiry as the counter's reset
// ("hi.reset, hi.retryAfter = true, st.cached-now, st.cached-now"): the 5th request is told
// duration_until_reset / retry-after 1.25 s although the window ends in 59 s, where the Redis
// store (the same service without reservations) says 59 s. Clients told to come back in 1 s
// come back and are denied again, every 1.25 s, for the rest of the window.
func TestReservingCachedDenialReportsTrueReset(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	d := oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 3, Period: time.Minute})
	plainSvc := newTestService(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, d)
	plainSvc.prefix = "r2cache:p:"
	resSvc := newTestService(t, newReservingStore(t, r.Addr, time.Second, clock), clock, d)
	resSvc.prefix = "r2cache:r:"
	for i := 0; i < 6; i++ {
		clock.Set(base.Add(time.Duration(i) * 100 * time.Millisecond))
		a, err := plainSvc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		b, err := resSvc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("request %d (one at a time, one instance):\nredis     %v\nreserving %v", i+1, a, b)
		}
		if i >= 3 && b.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
			end := time.Unix(base.Unix()-base.Unix()%60+60, 0)
			if got, want := b.Statuses[0].DurationUntilReset.AsDuration(), end.Sub(clock.Now()); got != want {
				t.Errorf("request %d denied, duration_until_reset %v; the window ends in %v", i+1, got, want)
			}
		}
	}
}

// replyDropper makes a connection lose the reply to the next write that contains marker,
// after Redis has run it: the connection reads the reply, closes and reports EOF. That is
// what a connection reset, a proxy or a failover does to a command that reached Redis.
type replyDropper struct {
	marker []byte
	armed  atomic.Bool
	fired  atomic.Int32
}

func (d *replyDropper) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &dropConn{Conn: c, d: d}, nil
}

type dropConn struct {
	net.Conn
	d    *replyDropper
	drop bool
}

func (c *dropConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.d.marker) && c.d.armed.CompareAndSwap(true, false) {
		c.drop = true
	}
	return c.Conn.Write(b)
}

func (c *dropConn) Read(b []byte) (int, error) {
	if c.drop {
		c.drop = false
		// Wait for the reply (Redis ran the commands), then lose it with the connection.
		if _, err := c.Conn.Read(b); err != nil {
			return 0, err
		}
		c.Conn.Close()
		c.d.fired.Add(1)
		return 0, io.EOF
	}
	return c.Conn.Read(b)
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

// slowWrites delays every write that contains marker by delay: a Redis (or network) that
// turns slow for one command.
type slowWrites struct {
	marker []byte
	delay  time.Duration
}

func (d *slowWrites) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, d: d}, nil
}

type slowConn struct {
	net.Conn
	d *slowWrites
}

func (c *slowConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.d.marker) {
		time.Sleep(c.d.delay)
	}
	return c.Conn.Write(b)
}

// TestReservingCallerLeavesAtDeadline: RedisStore.run claims every answer for its caller
// ("op.state.CompareAndSwap(opPending, opAnswered)") before the give-back round trip
// ("s.returnUnits(ctx, back)"), and Eval, when its context ends after that claim, waits for
// op.done ("answered meanwhile: take the answer"), which comes only after the give-back. A
// caller therefore stays past its own deadline for as long as the give-back takes, up to the
// pipeline's deadline: RedisOptions.Timeout for a call that reserves (sent by "go
// s.send(false)" precisely so that "the caller must not" outlive its deadline). Before the
// change Eval always left at ctx.Done. Here: a visit that asks for units is denied (another
// replica took the rest), so its 1+reserve units go back in the same batch; Redis is slow
// (800ms) for that give-back; the caller's deadline is 100ms, it gets its answer after ~800ms.
// (The plain Redis store does the same to any caller that did not send its pipeline itself,
// whenever the batch holds a denial.)
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

// TestRedisCallerLeavesAtDeadline: the same on the plain Redis store (no
// reservations), a regression: caller X (deadline 200ms) is queued behind a pipeline in
// flight and sent in a batch with caller Y (no deadline, so the batch waits up to Timeout);
// X is denied, its unit over the limit goes back in that batch's give-back, Redis is slow
// for it (800ms): X gets its answer after ~850ms. Before the change Eval returned at
// ctx.Done, 200ms.
func TestRedisCallerLeavesAtDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	slow := &slowWrites{marker: []byte("EXISTS"), delay: 800 * time.Millisecond}
	slowFirst := &slowWrites{marker: []byte("r2plain:first"), delay: 50 * time.Millisecond}
	c0, err := NewRedisClient(r.Addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	c0.(*redis.Client).Options().Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := slow.dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &slowConn{Conn: conn, d: slowFirst}, nil
	}
	s := NewRedisStore(c0, RedisOptions{Workers: 1, Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	x := fixedCheck("r2plain:x:{k}", 5, now)
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	if err := rc.Set(context.Background(), x.Key, 5, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// L leads a pipeline that takes 50ms.
	lDone := make(chan struct{})
	go func() {
		defer close(lDone)
		s.Eval(context.Background(), now, [][]Check{{fixedCheck("r2plain:first:{k}", 100, now)}})
	}()
	for s.active.Load() == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(5 * time.Millisecond)
	// Y (no deadline) and X (200ms) queue meanwhile and go in the next batch.
	go s.Eval(context.Background(), now, [][]Check{{fixedCheck("r2plain:y:{k}", 100, now)}})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	rs, err := s.Eval(ctx, now, [][]Check{{x}})
	took := time.Since(start)
	<-lDone
	t.Logf("X: %+v %v after %v", rs, err, took)
	if took > 400*time.Millisecond {
		t.Errorf("a caller with a 200ms deadline got its answer after %v (a give-back in its batch was slow)", took)
	}
}

// TestRedisClusterDenialGiveBackRunsOnce: the plain Redis store on a Cluster, the same
// re-send as TestReservingClusterGiveBackRunsOnce applied to the unit a denial gives back
// (run: "s.returnUnits(ctx, back)"): the 4th request on a limit of 3 is denied, its give-back's
// reply is lost after it ran, go-redis runs it again, and the counter drops below what was
// admitted: a 5th request is admitted.
func TestRedisClusterDenialGiveBackRunsOnce(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	c0, err := NewRedisClient(clusterURL(addrs))
	if err != nil {
		t.Fatal(err)
	}
	drop := &replyDropper{marker: []byte("EXISTS")}
	c0.(*redis.ClusterClient).Options().Dialer = drop.dial
	s := redisStoreFor(t, c0)
	now := base.UnixMicro()
	c := fixedCheck("r2cl:deny:{k}", 3, now)
	var admitted int
	for i := 0; i < 6; i++ {
		if i == 3 {
			drop.armed.Store(true) // the denial's give-back
		}
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0][0].Allowed {
			admitted++
		}
	}
	if drop.fired.Load() != 1 {
		t.Fatalf("no reply dropped (fired %d)", drop.fired.Load())
	}
	if admitted > 3 {
		t.Errorf("limit 3: admitted %d (a denial's give-back ran twice; counter now %d)", admitted, counter(t, c0, c.Key))
	}
}

// TestReservingNotDeniedLongAfterUnitsBack: the bound "a replica is denied while another holds
// units for at most 1.25 × hold" does not hold through the service's over-limit cache. Replica
// B reserves units at T0 (hold 1s); replica A is denied at T0+1.2s (the counter is full with
// B's units) and caches that denial for holdCap = 1.25s (service.go: "until = min(until,
// now+s.holdCap)"), i.e. until T0+2.45s. B gives its units back at T0+1.25s. At T0+1.5s
// nobody holds units and the counter has room, yet A denies from its cache, until T0+2.45s:
// up to 2.5 × hold after the reservation, 1.25 × hold after the units are back.
func TestReservingNotDeniedLongAfterUnitsBack(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	const limit = 100
	d := oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: limit, Period: time.Minute})
	a := newReservingStore(t, r.Addr, time.Second, clock)
	b := newReservingStore(t, r.Addr, time.Second, clock)
	svcA, svcB := newTestService(t, a, clock, d), newTestService(t, b, clock, d)
	call := func(s *Service) bool {
		t.Helper()
		resp, err := s.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.OverallCode == rlsv3.RateLimitResponse_OK
	}
	held := func(s *ReservingStore) (n uint64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, l := range s.leases {
			n += l.avail
		}
		return n
	}
	// T0: B reserves units.
	for i := 0; held(b) == 0; i++ {
		if i > 50 || !call(svcB) {
			t.Fatal("b holds nothing")
		}
	}
	// T0+1.2s: A takes what is left and is denied (B's units are still held).
	clock.Set(base.Add(1200 * time.Millisecond))
	for i := 0; call(svcA); i++ {
		if i > limit {
			t.Fatal("a never denied")
		}
	}
	// T0+1.25s: B's sweep gives its units back.
	clock.Set(base.Add(1250 * time.Millisecond))
	b.Sweep(clock.Now().UnixMicro())
	if n := held(b); n != 0 {
		t.Fatalf("b still holds %d", n)
	}
	// T0+1.5s: nobody holds units, the counter has room.
	clock.Set(base.Add(1500 * time.Millisecond))
	if !call(svcA) {
		t.Errorf("A denied at T0+1.5s (hold 1s): B's units were given back at T0+1.25s and nobody holds any; A's cached denial lasts until T0+2.45s")
	}
}
