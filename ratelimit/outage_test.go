package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// outageService is a service over a real Redis with the production client settings
// (NewRedisClient, default RedisOptions) and one fail-closed limit "closed" of n per hour on
// a frozen clock.
func outageService(t *testing.T, redisURL string, n uint64) *Service {
	t.Helper()
	c, err := NewRedisClient(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	store := NewRedisStore(c, RedisOptions{})
	t.Cleanup(func() { store.Close() })
	rule := []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: n, Period: time.Hour}}
	return newTestService(t, store, newFakeClock(base), ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{
		{Key: "closed", Limits: rule, FailMode: "closed"},
	}})
}

// TestRedisSlowButHealthyDoesNotDeny: Redis stalls for 1s (CLIENT PAUSE, as a loaded host or
// a slow fsync would) while callers wait. A caller whose deadline outlasts the stall gets
// Redis's answer, not a fail-closed denial from a store timeout shorter than its deadline;
// a caller whose deadline ends during the stall gets its fail mode at its own deadline,
// without failing the others in its batch; and nothing is charged twice (no re-sent script).
func TestRedisSlowButHealthyDoesNotDeny(t *testing.T) {
	r := itest.StartRedis(t)
	svc := outageService(t, r.Addr, 4)
	// The hasty caller counts on its own counter ("y"): whether Redis ran its script
	// depends on whether Redis read it before the client dropped the timed-out connection.
	call := func(d time.Duration, value string) (rlsv3.RateLimitResponse_Code, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		t0 := time.Now()
		resp, err := svc.ShouldRateLimit(ctx, req("test", []string{"closed", value}))
		if err != nil {
			t.Error(err)
			return rlsv3.RateLimitResponse_UNKNOWN, 0
		}
		return resp.OverallCode, time.Since(t0)
	}
	// Warm up: the script is loaded and a connection is open (this charges 1).
	if got, _ := call(5*time.Second, "x"); got != rlsv3.RateLimitResponse_OK {
		t.Fatalf("warm-up: %v", got)
	}
	admin := redis.NewClient(&redis.Options{Addr: r.Addr, Protocol: 2})
	defer admin.Close()
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", "1000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var patient [2]rlsv3.RateLimitResponse_Code
	for i := range patient {
		wg.Add(1)
		go func() { defer wg.Done(); patient[i], _ = call(5*time.Second, "x") }()
	}
	hasty, took := call(150*time.Millisecond, "y")
	wg.Wait()
	for i, got := range patient {
		if got != rlsv3.RateLimitResponse_OK {
			t.Errorf("patient caller %d during a 1s stall: %v, want OK (a slow Redis must not deny)", i, got)
		}
	}
	if hasty != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("caller with a 150ms deadline during a 1s stall: %v, want OVER_LIMIT (fail closed)", hasty)
	}
	if took > 900*time.Millisecond {
		t.Errorf("caller with a 150ms deadline answered after %v: it waited for the stall", took)
	}
	// Counter x was charged by the warm-up and the 2 patient callers, once each: the 4th
	// request fits, the 5th does not. A script run twice would have used up the limit.
	if got, _ := call(5*time.Second, "x"); got != rlsv3.RateLimitResponse_OK {
		t.Errorf("4th request: %v, want OK (3 of 4 used: something was charged twice)", got)
	}
	if got, _ := call(5*time.Second, "x"); got != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("5th request: %v, want OVER_LIMIT (4 of 4 used)", got)
	}
}

// TestRedisKilledUnderLoadFailClosedNeverAdmits: 16 callers load a fail-closed limit while
// Redis is SIGKILLed. Every call that starts after the kill has returned (the process is
// reaped) and ends before the restart begins must be denied; after the restart the limit
// admits again. Calls across the kill or the restart are not judged.
func TestRedisKilledUnderLoadFailClosedNeverAdmits(t *testing.T) {
	r := itest.StartRedis(t)
	svc := outageService(t, r.Addr, 1<<40)
	const (
		up int32 = iota
		killing
		down
		restarting
	)
	var phase atomic.Int32
	var admittedDown, deniedDown, admittedUp, deniedUp atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				before := phase.Load()
				cctx, c := context.WithTimeout(ctx, 5*time.Second)
				resp, err := svc.ShouldRateLimit(cctx, req("test", []string{"closed", "x"}))
				c()
				after := phase.Load()
				if err != nil {
					t.Error(err)
					return
				}
				ok := resp.OverallCode == rlsv3.RateLimitResponse_OK
				switch {
				case before != after:
				case before == down && ok:
					admittedDown.Add(1)
				case before == down:
					deniedDown.Add(1)
				case before == up && ok:
					admittedUp.Add(1)
				case before == up:
					deniedUp.Add(1)
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("answers while Redis is up", func() bool { return admittedUp.Load() >= 200 })
	phase.Store(killing)
	r.Stop()
	phase.Store(down)
	waitFor("answers while Redis is down", func() bool { return deniedDown.Load()+admittedDown.Load() >= 200 })
	phase.Store(restarting)
	r.Restart()
	cancel()
	wg.Wait()
	if n := admittedDown.Load(); n > 0 {
		t.Errorf("fail-closed limit admitted %d calls made entirely while Redis was down", n)
	}
	if n := deniedUp.Load(); n > 0 {
		t.Errorf("fail-closed limit denied %d calls while Redis was up", n)
	}
	recovered := false
	for i := 0; i < 500 && !recovered; i++ {
		resp, err := svc.ShouldRateLimit(context.Background(), req("test", []string{"closed", "x"}))
		recovered = err == nil && resp.OverallCode == rlsv3.RateLimitResponse_OK
		if !recovered {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !recovered {
		t.Error("fail-closed limit does not admit after Redis restarted")
	}
	t.Logf("up: %d admitted; down: %d denied", admittedUp.Load(), deniedDown.Load())
}

// TestRedisClusterNoScriptResendsOnlyThoseCalls: one request whose two descriptors live on
// two cluster masters, one of which lost its scripts (restart, SCRIPT FLUSH). The call that
// got NOSCRIPT is sent again after loading; the other one already ran and is not, so each
// counter is charged once.
func TestRedisClusterNoScriptResendsOnlyThoseCalls(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	c, err := NewRedisClient("redis+cluster://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2])
	if err != nil {
		t.Fatal(err)
	}
	store := NewRedisStore(c, RedisOptions{})
	t.Cleanup(func() { store.Close() })
	rule := []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 2, Period: time.Hour}}
	svc := newTestService(t, store, newFakeClock(base), ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{
		{Key: "a", Limits: rule}, {Key: "b", Limits: rule},
	}})
	cc := c.(*redis.ClusterClient)
	ctx := context.Background()
	master := func(d []string) string {
		st := descState{}
		st.lim, st.shared = svc.rules.Load().lookup("test", []entryView{{d[0], d[1]}})
		if st.lim == nil {
			t.Fatalf("no limit for %v", d)
		}
		key := svc.buildChecks("test", req("test", d).Descriptors[0].GetEntries(), &st, base, base.UnixMicro(), make([]Check, len(st.lim.rules)))[0].Key
		n, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return n.Options().Addr
	}
	// Pick values so that the two counters live on different masters.
	da := []string{"a", "v0"}
	db := []string{"b", "v0"}
	for i := 1; master(da) == master(db); i++ {
		db[1] = "v" + strconv.Itoa(i)
	}
	both := func() (rlsv3.RateLimitResponse_Code, rlsv3.RateLimitResponse_Code) {
		resp, err := svc.ShouldRateLimit(ctx, req("test", da, db))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Statuses[0].Code, resp.Statuses[1].Code
	}
	if a, b := both(); a != rlsv3.RateLimitResponse_OK || b != rlsv3.RateLimitResponse_OK {
		t.Fatalf("first request: %v %v", a, b)
	}
	// The master of b's counter forgets the scripts; a's master keeps them.
	flushed := redis.NewClient(&redis.Options{Addr: master(db), Protocol: 2})
	defer flushed.Close()
	if err := flushed.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if a, b := both(); a != rlsv3.RateLimitResponse_OK || b != rlsv3.RateLimitResponse_OK {
		t.Fatalf("second request (after SCRIPT FLUSH on one master): %v %v, want OK OK (each charged once: 2 of 2)", a, b)
	}
	if a, b := both(); a != rlsv3.RateLimitResponse_OVER_LIMIT || b != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("third request: %v %v, want OVER_LIMIT for both", a, b)
	}
}
