package ratelimit

// Third adversarial review of fixed-window reservations, of what the second review's fixes
// changed (noRetry/evalCmd, answers claimed after the give-back, the over-limit cache's
// until/valid, fixed1 without DEL): the first three tests broke the version reviewed (their
// comments tell how) and guard the fixes; the others check that Cluster MOVED/ASK, cached
// fixed-window denials and counter expiries hold. Every test runs against a real redis-server.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// r3Service is a service over store with the given key prefix, with or without the local
// over-limit cache.
func r3Service(t testing.TB, store Store, clock Clock, prefix string, noCache bool, d ir.RateLimitDomain) *Service {
	t.Helper()
	s, err := New(Options{Store: store, Clock: clock, Registerer: prometheus.NewRegistry(), KeyPrefix: prefix, DisableLocalCache: noCache})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := BuildRulesFromDomains(1, []ir.RateLimitDomain{d})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(rules)
	return s
}

// r3Answer is what a client sees of a response: code, remaining, reset and headers.
func r3Answer(r *rlsv3.RateLimitResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v", r.OverallCode)
	for _, s := range r.Statuses {
		fmt.Fprintf(&b, " [%v rem=%d reset=%v]", s.Code, s.LimitRemaining, s.DurationUntilReset.AsDuration())
	}
	for _, h := range r.ResponseHeadersToAdd {
		fmt.Fprintf(&b, " %s=%s", h.Key, h.Value)
	}
	return b.String()
}

var allHeaders = ir.RateLimitHeaders{Limit: true, Remaining: true, Reset: true, RetryAfter: true, IETF: true}

// TestCachedDenialAnswersLikeStore: a denial answered from the service's over-limit
// cache (service.go respond, "hi.denied, hi.reset, hi.retryAfter = true, st.cached-now,
// st.cached-now"; hi.remaining left 0) reports remaining 0 and reset = retry-after, whatever
// the store said. The store reports, on the same denial, the remaining capacity (a request of
// cost 4 denied with 2 left: limit_remaining 2) and, for sliding/token/leaky, a reset that is
// not the retry-after (token bucket: time until full; sliding: until the newest hit leaves
// the window; leaky: until the queue drains). So the same request at the same time gets
// different limit_remaining / duration_until_reset / x-ratelimit-remaining /
// x-ratelimit-reset / RateLimit answers depending on whether the cache answered; and with
// reservations the cache is used only a quarter hold, after which the store answers again:
// one replica's answers, one request at a time, differ with and without RATE_LIMIT_RESERVE
// (README: "remaining counts included, are those without reservations").
//
// Each case: three services on one Redis and one clock: "nocache" (the store's truth),
// "plain" (Redis store with the cache) and "reserving" (hold 1s: cache used 250ms at most).
func TestCachedDenialAnswersLikeStore(t *testing.T) {
	r3CachedDenials(t, []r3Case{
		{"sliding", ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 3, Period: time.Minute}, 1},
		{"token", ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Minute}, 1},
		{"leaky", ir.RateLimitRule{Algorithm: ir.LeakyBucket, Requests: 3, Period: time.Minute, Burst: 3}, 1},
	})
}

// TestCachedDenialFixedMatchesStore: for fixed windows (cost 1 and cost 4, denied
// with units left) a cached denial answers as the store does, with and without reservations.
func TestCachedDenialFixedMatchesStore(t *testing.T) {
	r3CachedDenials(t, []r3Case{
		{"fixed1", ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 3, Period: time.Minute}, 1},
		{"fixed4", ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 10, Period: time.Minute}, 4},
	})
}

type r3Case struct {
	name string
	rule ir.RateLimitRule
	cost uint32
}

func r3CachedDenials(t *testing.T, cases []r3Case) {
	r := itest.StartRedis(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(base)
			d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
				Key: "k", Name: "lim", Limits: []ir.RateLimitRule{tc.rule}, Headers: allHeaders,
			}}}
			p := "r3cache:" + tc.name + ":"
			truth := r3Service(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, p+"n:", true, d)
			plain := r3Service(t, redisStoreFor(t, mustClient(t, r.Addr)), clock, p+"p:", false, d)
			res := r3Service(t, newReservingStore(t, r.Addr, time.Second, clock), clock, p+"r:", false, d)
			ask := func(s *Service) string {
				q := req("test", []string{"k", "v"})
				q.HitsAddend = tc.cost
				resp, err := s.ShouldRateLimit(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				return r3Answer(resp)
			}
			// Requests at 0, 100ms, 200ms, … 1s (the first ones admitted, then denials: the
			// first from the store, the next from the cache).
			for i := 0; i <= 10; i++ {
				clock.Set(base.Add(time.Duration(i) * 100 * time.Millisecond))
				want, a, b := ask(truth), ask(plain), ask(res)
				if a != want || b != want {
					t.Errorf("t=%v:\n  store     %s\n  plain     %s\n  reserving %s", clock.Now().Sub(base), want, a, b)
				}
			}
		})
	}
}

// r3Node is a direct client to one cluster node.
type r3Node struct {
	addr, host, port, id string
	c                    *redis.Client
}

func r3Nodes(t testing.TB, cl *itest.RedisCluster) []*r3Node {
	t.Helper()
	var out []*r3Node
	for _, n := range cl.Nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2})
		t.Cleanup(func() { c.Close() })
		id, err := c.Do(context.Background(), "cluster", "myid").Text()
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(n.Addr, ":")
		out = append(out, &r3Node{addr: n.Addr, host: host, port: port, id: id, c: c})
	}
	return out
}

func r3Do(t testing.TB, n *r3Node, args ...any) any {
	t.Helper()
	v, err := n.c.Do(context.Background(), args...).Result()
	if err != nil {
		t.Fatalf("%s %v: %v", n.addr, args, err)
	}
	return v
}

// r3Owner returns the node that serves slot.
func r3Owner(t testing.TB, nodes []*r3Node, key string) (src *r3Node, slot int64) {
	t.Helper()
	slot = r3Do(t, nodes[0], "cluster", "keyslot", key).(int64)
	// The owner answers a key command on the slot without redirect.
	for _, n := range nodes {
		if err := n.c.Do(context.Background(), "exists", key).Err(); err == nil {
			return n, slot
		}
	}
	t.Fatal("no owner")
	return nil, 0
}

// TestRedisClusterMovedAndAsk: with every command wrapped in noRetry and the scripts sent
// as evalCmd, the store still follows ASK (slot migrating, the keys already on the target:
// SET NX/INCRBY, EVALSHA of the group script, which the target has not loaded: NOSCRIPT
// then ASK again, and the EVAL of a give-back) and MOVED (slot moved, the client's map
// stale), and nothing runs twice: every counter equals what was admitted.
func TestRedisClusterMovedAndAsk(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	url := clusterURL(addrs)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	c0, err := NewRedisClient(url)
	if err != nil {
		t.Fatal(err)
	}
	rs := NewReservingStore(NewRedisStore(c0, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: 200 * time.Millisecond, Clock: clock})
	t.Cleanup(func() { rs.Close() })
	plain := rs.Inner()
	nodes := r3Nodes(t, cl)
	const tag = "{r3mv}"
	fixed := fixedCheck("r3:f:"+tag, 1000, now)
	fixed2 := fixedCheck("r3:f2:"+tag, 1000, now)
	sliding := Check{Key: "r3:s:" + tag, Alg: AlgSlidingWindow, Limit: 1000, Period: 60_000_000, Cost: 1}
	group := []Check{{Key: "r3:g1:" + tag, Alg: AlgSlidingWindow, Limit: 1000, Period: 60_000_000, Cost: 1},
		{Key: "r3:g2:" + tag, Alg: AlgFixedWindow, Limit: 1000, Period: 60_000_000, WindowEnd: fixed.WindowEnd, Cost: 2}}
	want := map[string]int64{}
	call := func(s Store, gs ...[]Check) {
		t.Helper()
		res, err := s.Eval(context.Background(), now, gs)
		if err != nil {
			t.Fatalf("eval %v: %v", gs, err)
		}
		for gi, g := range gs {
			ok := allAllowed(res[gi])
			if !ok {
				t.Fatalf("denied: %v %+v", g, res[gi])
			}
			for _, c := range g {
				want[c.Key] += int64(c.Cost)
			}
		}
	}
	round := func() {
		t.Helper()
		for i := 0; i < 20; i++ {
			call(rs, []Check{fixed})
		}
		call(plain, []Check{fixed2}, []Check{sliding}, group)
	}
	round()
	src, slot := r3Owner(t, nodes, fixed.Key)
	var dst *r3Node
	for _, n := range nodes {
		if n != src {
			dst = n
			break
		}
	}
	// ASK: the slot migrates from src to dst; every key is on dst already.
	r3Do(t, dst, "cluster", "setslot", slot, "importing", src.id)
	r3Do(t, src, "cluster", "setslot", slot, "migrating", dst.id)
	keys, err := src.c.Do(context.Background(), "cluster", "getkeysinslot", slot, 100).StringSlice()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys in slot: %v %v", keys, err)
	}
	args := []any{"migrate", dst.host, dst.port, "", 0, 5000, "keys"}
	for _, k := range keys {
		args = append(args, k)
	}
	r3Do(t, src, args...)
	r3Do(t, dst, "script", "flush") // the target has not loaded the group script
	round()
	rs.Sweep(now + 300_000) // the give-back (EVAL) goes by ASK too
	// MOVED: the slot is dst's; the client still thinks src.
	for _, n := range nodes {
		r3Do(t, n, "cluster", "setslot", slot, "node", dst.id)
	}
	r3Do(t, dst, "script", "flush")
	round()
	rs.Sweep(now + 600_000)
	// Every counter equals what was admitted (the reserving store holds nothing now).
	rs.mu.Lock()
	held := uint64(0)
	for _, l := range rs.leases {
		held += l.avail
	}
	rs.mu.Unlock()
	want[fixed.Key] += int64(held)
	// The redirections did happen.
	var stats strings.Builder
	stats.WriteString(src.c.Info(context.Background(), "errorstats").Val())
	for _, e := range []string{"errorstat_ASK", "errorstat_MOVED"} {
		if !strings.Contains(stats.String(), e) {
			t.Errorf("no %s seen:\n%s", e, stats.String())
		}
	}
	stats.WriteString(dst.c.Info(context.Background(), "errorstats").Val())
	for _, e := range []string{"errorstat_NOSCRIPT"} {
		if !strings.Contains(stats.String()[strings.LastIndex(stats.String(), "# Errorstats"):], e) {
			t.Errorf("no %s seen:\n%s", e, stats.String())
		}
	}
	t.Log(stats.String())
	for k, w := range want {
		var got int64
		switch {
		case strings.HasPrefix(k, "r3:s:") || strings.HasPrefix(k, "r3:g1:"):
			got = slidingUnits(t, dst.c.Get(context.Background(), k).Val())
		default:
			got, _ = dst.c.Get(context.Background(), k).Int64()
		}
		if got != w {
			t.Errorf("%s: %d in Redis, %d admitted (held %d)", k, got, w, held)
		}
		if ttl := dst.c.PTTL(context.Background(), k).Val(); ttl < 0 {
			t.Errorf("%s: no expiry (%v)", k, ttl)
		}
	}
}

// TestRedisLeaderLeavesAtDeadline: a caller that leads its batch (RedisStore.Eval:
// "s.send(true)", for every call that does not reserve) runs the pipeline on its own
// goroutine, and run() waits for Redis until the batch's deadline, the latest of its callers'
// ("if d.After(deadline) { deadline = d }"; a caller without a deadline counts as Timeout),
// then for the over-limit give-back and the late give-back of abandoned reservations, all
// before send returns and Eval reaches its select on ctx.Done. So the leader is held by its
// batch-mates' patience: RedisOptions.Timeout promises "each caller gives up, and gets its
// limit's fail mode, at its own deadline, not at a fixed one shared by the batch", and the
// second review's fix ("answers are claimed after the over-limit give-back so a caller leaves
// at its deadline") covers only callers that did not lead. Here: Workers 1, Window 50ms
// (the leader waits for batch-mates); L (deadline 200ms) leads, Y (no deadline) joins its
// batch; Redis is busy for 900ms: L gets its answer after ~900ms instead of 200ms. (With the
// default Window 0 the same happens whenever the leader's Gosched gathers a caller with a
// later deadline.)
func TestRedisLeaderLeavesAtDeadline(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := NewRedisStore(mustClient(t, r.Addr), RedisOptions{Workers: 1, Window: 50 * time.Millisecond, Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	// Warm the pool up.
	if _, err := s.Eval(context.Background(), now, [][]Check{{fixedCheck("r3lead:warm:{k}", 100, now)}}); err != nil {
		t.Fatal(err)
	}
	done := blockRedis(t, r.Addr, 900*time.Millisecond)
	defer func() { <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	lc, yDone := leaderAndMate(s, ctx, now, "r3lead")
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

// r3Hold calls s with c until s holds at least n units of c's counter; it returns the units
// admitted.
func r3Hold(t testing.TB, s *ReservingStore, now int64, c Check, n uint64) (admitted uint64) {
	t.Helper()
	for i := 0; ; i++ {
		s.mu.RLock()
		l := s.leases[c.Key]
		held := l != nil && l.avail >= n
		s.mu.RUnlock()
		if held {
			return admitted
		}
		if i > 5000 {
			t.Fatal("never holds units")
		}
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil || !rs[0][0].Allowed {
			t.Fatalf("call %d: %+v %v", i, rs, err)
		}
		admitted += c.Cost
	}
}

// TestReservingHeldUnitsKeptWithCanceledRequest: since 3dc24a5 ReservingStore.Eval gives
// the units it releases (a counter named twice in the request, or a lease of another limit)
// back within the request's context ("s.giveBack(ctx, back)"). A request whose context is
// already done (the client went away, Envoy's timeout passed) releases the lease's units
// (release: "l.avail = 0") and its give-back is never sent (go-redis fails it on the
// context before writing); giveBack keeps only units that notSent recognises (dial, pool
// timeout, closed client), so a context error drops them: they stay charged to the counter
// in Redis, held by nobody, until the window ends. Here: a holds n units of a counter of
// limit 1000; one canceled request names the counter twice; then everybody drains the
// counter: 1000 - n admitted instead of 1000.
func TestReservingHeldUnitsKeptWithCanceledRequest(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	a := newReservingStore(t, r.Addr, time.Minute, clock)
	b := newReservingStore(t, r.Addr, time.Minute, clock)
	const limit = 1000
	c := fixedCheck("r3cancel:{k}", limit, now)
	admitted := r3Hold(t, a, now, c, 10)
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

// TestFixedCountersKeepExpiry: fixed1 no longer deletes a counter it created over the
// limit. Every interleaving of the native path (SET NX PX, then INCRBY, possibly with other
// commands in between), fixed1, group() and give-backs (returnScript) leaves each counter
// with an expiry, and with the count of what was admitted.
func TestFixedCountersKeepExpiry(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := redisStoreFor(t, mustClient(t, r.Addr))
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	ctx := context.Background()
	eval := func(gs ...[]Check) [][]Result {
		t.Helper()
		res, err := s.Eval(ctx, now, gs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ttlOK := func(step, key string) {
		t.Helper()
		if d := rc.PTTL(ctx, key).Val(); d == -1 {
			t.Errorf("%s: %s has no expiry (value %d)", step, key, counter(t, rc, key))
		}
	}
	for i, seq := range []string{"fixed1-over,native", "native-set,fixed1-over,native-incr", "native-set,fixed1,native-incr",
		"native-set,giveback,native-incr", "native-set,group,native-incr", "fixed1-over,giveback,group", "group-over,native"} {
		key := fmt.Sprintf("r3ttl:%d:{k}", i)
		c := fixedCheck(key, 3, now)
		over := c
		over.Cost = 5
		ttl := (c.WindowEnd-now+999)/1000 + 60000
		for _, step := range strings.Split(seq, ",") {
			switch step {
			case "native":
				eval([]Check{c})
			case "native-set": // the first half of a native check
				rc.SetNX(ctx, key, 0, time.Duration(ttl)*time.Millisecond)
			case "native-incr": // its second half
				rc.IncrBy(ctx, key, 1)
			case "fixed1":
				c2 := c
				c2.Cost = 2
				eval([]Check{c2})
			case "fixed1-over":
				if eval([]Check{over})[0][0].Allowed {
					t.Fatal("cost 5 admitted on a limit of 3")
				}
			case "giveback":
				s.returnUnits(ctx, []Refund{{Key: key, N: 1}})
			case "group":
				eval([]Check{c, {Key: key + "s", Alg: AlgSlidingWindow, Limit: 10, Period: 60_000_000, Cost: 1}})
			case "group-over":
				eval([]Check{over, {Key: key + "s", Alg: AlgSlidingWindow, Limit: 10, Period: 60_000_000, Cost: 1}})
			}
			ttlOK(seq+" after "+step, key)
		}
	}
}
