package ratelimit

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// TestRedisCallerLeavesAtDeadline: a caller leaves at its own deadline even when its batch
// is still busy with the give-back of units charged over the limit (RedisOptions.Timeout:
// "each caller gives up … at its own deadline"). Here: caller X (deadline 200ms) is queued
// behind a pipeline in flight and sent in a batch with caller Y (no deadline, so the batch
// waits up to Timeout); X is denied, its unit over the limit goes back in that batch's
// give-back, Redis is slow for it (800ms): X must get its answer at about 200ms, not 850ms.
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

// TestRedisLeaderLeavesAtDeadline: a caller that leads its batch sends the pipeline itself,
// and run() waits for Redis until the batch's deadline, the latest of its callers' (a
// caller without a deadline counts as Timeout), then for the over-limit give-back. Were the
// leader to run its batch to the end, it would be held by its batch-mates' patience, while
// RedisOptions.Timeout promises "each caller gives up, and gets its limit's fail mode, at
// its own deadline, not at a fixed one shared by the batch": so a leader whose batch-mates
// outlive it hands the batch to a goroutine of its own (outlives). Here: Workers 1, Window 50ms
// (the leader waits for batch-mates); L (deadline 200ms) leads, Y (no deadline) joins its
// batch; Redis is busy for 900ms: L must get its answer at about 200ms, not 900ms. (With the
// default Window 0 the same applies whenever the leader's Gosched gathers a caller with a
// later deadline.)
func TestRedisLeaderLeavesAtDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := NewRedisStore(mustClient(t, r.Addr), RedisOptions{Workers: 1, Window: 50 * time.Millisecond, Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	// Warm the pool up.
	if _, err := s.Eval(context.Background(), now, [][]Check{{fixedCheck("lead:warm:{k}", 100, now)}}); err != nil {
		t.Fatal(err)
	}
	done := blockRedis(t, r.Addr, 900*time.Millisecond)
	defer func() { <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	lc, yDone := leaderAndMate(s, ctx, now, "lead")
	a := <-lc
	<-yDone
	t.Logf("L: %v after %v", a.err, a.took)
	if a.took > 400*time.Millisecond {
		t.Errorf("a caller with a 200ms deadline that led its batch got its answer after %v (a batch-mate without deadline kept the pipeline waiting)", a.took)
	}
}

// leaderAnswer is what a caller got and when.
type leaderAnswer struct {
	err  error
	took time.Duration
}

// leaderAndMate starts a call L with ctx, which leads its batch (s's Window makes its send
// wait), then, once L is in, a call Y without deadline that joins L's batch. It returns L's
// answer and when Y is done.
func leaderAndMate(s *RedisStore, ctx context.Context, now int64, prefix string) (<-chan leaderAnswer, <-chan struct{}) {
	lc := make(chan leaderAnswer, 1)
	start := time.Now()
	go func() {
		_, err := s.Eval(ctx, now, [][]Check{{fixedCheck(prefix+":l:{k}", 100, now)}})
		lc <- leaderAnswer{err, time.Since(start)}
	}()
	for s.active.Load() == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(10 * time.Millisecond)
	yDone := make(chan struct{})
	go func() {
		defer close(yDone)
		s.Eval(context.Background(), now, [][]Check{{fixedCheck(prefix+":y:{k}", 100, now)}})
	}()
	return lc, yDone
}

// TestRedisCloseGivesBackAbandonedReservation: run() refunds the extra units charged for an
// abandoned call on a goroutine of its own, after which the pipeline slot is released. Close
// must wait for that goroutine too (RedisStore.late), not only for running == 0: closing the
// client under a refund that has not written its EVAL yet (here the network is 100ms slow
// for it) would leave the units charged to the counter for the rest of the window.
// ReservingStore.Close ends in the same RedisStore.Close. Here: a call reserving 50 units gives up at 100ms while Redis is busy
// 400ms; Close right after: the counter must end at 1 (the abandoned call's own cost), not 51.
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
	c := fixedCheck("close:{k}", 1000, now)
	if _, err := s.Eval(context.Background(), now, [][]Check{{fixedCheck("close:warm:{k}", 10, now)}}); err != nil {
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
				return p.Do(context.Background(), "blpop", "nb:none", 0.05).Err()
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
		s.Eval(context.Background(), now, [][]Check{{fixedCheck("nb:x:{k}", 100, now)}})
	}()
	waitFor("X leads", func(run, q int) bool { return run == 1 })
	time.Sleep(50 * time.Millisecond)
	go func() {
		defer close(lDone)
		s.Eval(context.Background(), now, [][]Check{{fixedCheck("nb:l:{k}", 100, now)}})
	}()
	waitFor("L leads", func(run, q int) bool { return run == 2 })
	waitFor("X takes the queue", func(run, q int) bool { return q == 0 })
	c := fixedCheck("nb:r:{k}", 1000, now)
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
	_, err := s.Eval(ctx, now, [][]Check{{fixedCheck("win:{k}", 100, now)}})
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
	if _, err := s.Eval(context.Background(), now, [][]Check{{fixedCheck("cancel:warm:{k}", 100, now)}}); err != nil {
		t.Fatal(err)
	}
	done := blockRedis(t, r.Addr, 800*time.Millisecond)
	defer func() { <-done }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lc, yDone := leaderAndMate(s, ctx, now, "cancel")
	time.Sleep(90 * time.Millisecond)
	cancel()
	a := <-lc
	<-yDone
	t.Logf("L: %v after %v", a.err, a.took)
	if a.took > 400*time.Millisecond {
		t.Errorf("a leader canceled at 100ms got its answer after %v (its batch-mate without deadline kept it)", a.took)
	}
}

// TestRedisDenialTakeBackAfterDeadline: a cost-1 fixed-window check goes out as INCRBY and
// the units over the limit are taken back after the reply (fixedNative). When the reply
// comes after the caller's deadline, the take-back must still run: the counter would keep
// the unit above its limit, and once units held elsewhere come back (a reservation's
// give-back), that unit would be capacity nobody can use until the window ends.
func TestRedisDenialTakeBackAfterDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	late := &lateReplies{marker: []byte("incrby"), delay: 80 * time.Millisecond}
	c0, err := NewRedisClient(r.Addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	c0.(*redis.Client).Options().Dialer = late.dial
	s := NewRedisStore(c0, RedisOptions{Timeout: 5 * time.Second})
	now := base.UnixMicro()
	const limit = 3
	c := fixedCheck("takeback:{k}", limit, now)
	for i := 0; i < limit; i++ {
		if rs, err := s.Eval(context.Background(), now, [][]Check{{c}}); err != nil || !rs[0][0].Allowed {
			t.Fatalf("call %d: %+v %v", i, rs, err)
		}
	}
	late.armed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Millisecond)
	rs, err := s.Eval(ctx, now, [][]Check{{c}})
	cancel()
	t.Logf("a call at the limit, its reply after its deadline: %+v %v", rs, err)
	if err == nil && rs[0][0].Allowed {
		t.Fatalf("admitted over the limit: %+v", rs[0][0])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	if v := counter(t, rc, c.Key); v != limit {
		t.Errorf("counter %d after a denial answered late, want %d (the unit charged over the limit kept)", v, limit)
	}
}
