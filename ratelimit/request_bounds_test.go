package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

func wrapUint64(v uint64) *wrapperspb.UInt64Value { return wrapperspb.UInt64(v) }

// costReq is a request for descriptor k=v with a per-descriptor hits_addend.
func costReq(cost uint64) *rlsv3.RateLimitRequest {
	q := req("test", []string{"k", "v"})
	q.Descriptors[0].HitsAddend = wrapUint64(cost)
	return q
}

func isInvalidArgument(err error) bool { return status.Code(err) == codes.InvalidArgument }

// TestHugeCostNeverWrapsACounter: a fixed window of 5 per minute with 4 hits used; a call of
// cost 2^64-4 (which made the memory counter wrap to 0, then 30 of 30 calls passed) is answered
// OVER_LIMIT without touching the counter, and then exactly one more unit is admitted, on both stores. The same for every
// cost at the uint64 boundaries.
func TestHugeCostNeverWrapsACounter(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		t.Run(string(kind), func(t *testing.T) {
			store := newTestStore(t, kind)
			for _, huge := range []uint64{math.MaxUint64 - 3, math.MaxUint64, math.MaxUint64 - 4, 1 << 63, 1 << 53, maxRequests + 1, 1 << 32} {
				svc := newTestService(t, store, newFakeClock(base), oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 5, Period: time.Minute}))
				svc.prefix = fmt.Sprintf("wrap:%d:", huge)
				for i := 0; i < 4; i++ {
					if r, err := svc.ShouldRateLimit(context.Background(), costReq(1)); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
						t.Fatalf("cost %d: setup hit %d: %v %v", huge, i, r, err)
					}
				}
				if r, err := svc.ShouldRateLimit(context.Background(), costReq(huge)); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
					t.Fatalf("cost %d: %v %v, want OVER_LIMIT", huge, r, err)
				}
				admitted := 0
				for i := 0; i < 30; i++ {
					r, err := svc.ShouldRateLimit(context.Background(), costReq(1))
					if err != nil {
						t.Fatal(err)
					}
					if r.OverallCode == rlsv3.RateLimitResponse_OK {
						admitted++
					}
				}
				if admitted != 1 {
					t.Fatalf("after cost %d: %d of 30 admitted, want 1", huge, admitted)
				}
			}
		})
	}
}

// TestBucketsDenyCostAboveBurst: token and leaky buckets answer a cost above their burst
// OVER_LIMIT on both stores (the memory store admitted 2^32-1 through an overflow while Redis
// denied it), up to a cost of 2^64-1.
func TestBucketsDenyCostAboveBurst(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		store := newTestStore(t, kind)
		for _, rule := range []ir.RateLimitRule{
			{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Second, Burst: 3},
			{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Second, Burst: 3},
			{Algorithm: ir.TokenBucket, Requests: 4_000_000_000, Period: time.Hour},
			{Algorithm: ir.LeakyBucket, Requests: 1, Period: 24 * time.Hour, Burst: 1},
		} {
			t.Run(fmt.Sprintf("%s/%s/%d", kind, rule.Algorithm, rule.Requests), func(t *testing.T) {
				svc := newTestService(t, store, newFakeClock(base), oneRuleDomain(rule))
				svc.prefix = fmt.Sprintf("burst:%s:%d:", rule.Algorithm, rule.Requests)
				for _, cost := range []uint64{math.MaxUint32, math.MaxUint32 - 1, 4_000_000_001, math.MaxUint64, math.MaxUint32 + 1} {
					r, err := svc.ShouldRateLimit(context.Background(), costReq(cost))
					if err != nil {
						t.Fatal(err)
					}
					if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
						t.Fatalf("cost %d admitted: %v", cost, r)
					}
				}
				// The counter is untouched: a cost of 1 passes.
				if r, err := svc.ShouldRateLimit(context.Background(), costReq(1)); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
					t.Fatalf("cost 1 after the refusals: %v %v", r, err)
				}
			})
		}
	}
}

// TestRequestCaps: a request past a documented cap (descriptors per request, entries per
// descriptor) is refused InvalidArgument before any store work; one at each cap is served, and
// so is a hits_addend of 2^64-1 (see TestHitsAddendBeyondUint32IsCounted).
func TestRequestCaps(t *testing.T) {
	store := &countingStore{Store: NewMemoryStore()}
	svc := newTestService(t, store, newFakeClock(base), oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 5, Period: time.Minute}))
	many := func(n int) *rlsv3.RateLimitRequest {
		q := &rlsv3.RateLimitRequest{Domain: "test"}
		for i := 0; i < n; i++ {
			q.Descriptors = append(q.Descriptors, &rlcommon.RateLimitDescriptor{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "k", Value: fmt.Sprint(i)}}})
		}
		return q
	}
	wide := func(n int) *rlsv3.RateLimitRequest {
		d := &rlcommon.RateLimitDescriptor{}
		for i := 0; i < n; i++ {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: "k", Value: fmt.Sprint(i)})
		}
		return &rlsv3.RateLimitRequest{Domain: "test", Descriptors: []*rlcommon.RateLimitDescriptor{d}}
	}
	for name, q := range map[string]*rlsv3.RateLimitRequest{
		"descriptors": many(MaxDescriptors + 1), "10000 descriptors": many(10_000),
		"entries": wide(MaxDescriptorEntries + 1),
	} {
		if _, err := svc.ShouldRateLimit(context.Background(), q); !isInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if store.calls != 0 {
		t.Fatalf("refused requests reached the store %d times", store.calls)
	}
	for name, q := range map[string]*rlsv3.RateLimitRequest{
		"descriptors": many(MaxDescriptors), "entries": wide(MaxDescriptorEntries), "hits_addend": costReq(math.MaxUint64),
	} {
		if _, err := svc.ShouldRateLimit(context.Background(), q); err != nil {
			t.Errorf("%s at the cap: %v", name, err)
		}
	}
}

// TestPoisonedRequestsLeaveOthersAlone: on Redis, requests built to break the store (cost
// 2^64-1, 10,000 descriptors, costs at every boundary) run concurrently with legitimate
// callers sharing the same pipelines; every legitimate answer is exact: each client's 10 of
// 15 calls admitted, none failed open (620 of 1,500 failed open when one script error took
// its whole pipeline down).
// With fixed-window reservations on (ReservingStore) the same holds.
func TestPoisonedRequestsLeaveOthersAlone(t *testing.T) {
	r := itest.StartRedis(t)
	t.Run("redis", func(t *testing.T) {
		testPoisonedRequests(t, redisStoreFor(t, mustClient(t, r.Addr)), newFakeClock(base), "p:")
	})
	t.Run("reserving", func(t *testing.T) {
		clock := newFakeClock(base)
		testPoisonedRequests(t, newReservingStore(t, r.Addr, time.Second, clock), clock, "pr:")
	})
}

func testPoisonedRequests(t *testing.T, store Store, clock *fakeClock, prefix string) {
	svc := newTestService(t, store, clock, oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 10, Period: time.Minute}),
		ir.RateLimitDomain{Name: "other", Descriptors: []ir.RateLimitDescriptor{
			{Key: "s", Limits: []ir.RateLimitRule{{Algorithm: ir.SlidingWindow, Requests: 10, Period: time.Minute}}},
			{Key: "t", Limits: []ir.RateLimitRule{{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Minute}}},
			{Key: "l", Limits: []ir.RateLimitRule{{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Minute, Burst: 10}}},
		}})
	svc.prefix = prefix
	poisons := []*rlsv3.RateLimitRequest{costReq(math.MaxUint64), costReq(math.MaxUint64 - 3), costReq(1 << 53), costReq(math.MaxUint32)}
	for _, k := range []string{"s", "t", "l"} {
		q := req("other", []string{k, "x"}, []string{k, "y"})
		q.Descriptors[0].HitsAddend = wrapUint64(math.MaxUint64)
		q.Descriptors[1].HitsAddend = wrapUint64(math.MaxUint32)
		poisons = append(poisons, q)
	}
	huge := &rlsv3.RateLimitRequest{Domain: "test"}
	for i := 0; i < 10_000; i++ {
		huge.Descriptors = append(huge.Descriptors, &rlcommon.RateLimitDescriptor{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "k", Value: fmt.Sprint("h", i)}}})
	}
	poisons = append(poisons, huge)
	const clients, calls = 100, 15
	admitted := make([]int, clients)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := p; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = svc.ShouldRateLimit(context.Background(), poisons[i%len(poisons)])
			}
		}(p)
	}
	var legit sync.WaitGroup
	for c := 0; c < clients; c++ {
		legit.Add(1)
		go func(c int) {
			defer legit.Done()
			domain, key := "test", "k"
			if c%4 != 0 {
				domain, key = "other", []string{"s", "t", "l"}[c%4-1]
			}
			for i := 0; i < calls; i++ {
				r, err := svc.ShouldRateLimit(context.Background(), req(domain, []string{key, fmt.Sprint("client", c)}))
				if err != nil {
					t.Error(err)
					return
				}
				if r.OverallCode == rlsv3.RateLimitResponse_OK {
					admitted[c]++
				}
			}
		}(c)
	}
	legit.Wait()
	close(stop)
	wg.Wait()
	for c, n := range admitted {
		if n != 10 {
			t.Errorf("client %d: %d of %d admitted, want 10", c, n, calls)
		}
	}
}

// TestScriptErrorStaysWithItsGroup: when the script fails for one group (here its key holds a
// list, so Redis answers WRONGTYPE), only the request that carried it gets the error; the
// other requests packed into the same script call and pipeline get their answers.
func TestScriptErrorStaysWithItsGroup(t *testing.T) {
	r := newTestStore(t, "redis").(*RedisStore)
	// Gather concurrent calls into one pipeline, so the bad group rides with the others.
	s := NewRedisStore(r.Client(), RedisOptions{Timeout: 5 * time.Second, Window: 20 * time.Millisecond, Workers: 1})
	ctx := context.Background()
	if err := r.Client().RPush(ctx, "iso:{bad}:s", "x").Err(); err != nil {
		t.Fatal(err)
	}
	now := base.UnixMicro()
	for _, alg := range []Algorithm{AlgSlidingWindow, AlgTokenBucket, AlgLeakyBucket, AlgFixedWindow} {
		t.Run(string(rune(alg)), func(t *testing.T) {
			bad := Check{Key: "iso:{bad}:s", Alg: alg, Limit: 10, Period: 1_000_000, Burst: 10, WindowEnd: now + 1_000_000, Cost: 2}
			var wg sync.WaitGroup
			errs := make([]error, 40)
			for i := range errs {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					good := Check{Key: fmt.Sprintf("iso:{%c%d}:s", alg, i), Alg: alg, Limit: 10, Period: 1_000_000, Burst: 10, WindowEnd: now + 1_000_000, Cost: 2}
					g := [][]Check{{good}}
					if i == 20 {
						g = [][]Check{{bad}}
					} else if i%3 == 0 {
						g = [][]Check{{good, {Key: fmt.Sprintf("iso:{%c%d}:t", alg, i), Alg: AlgTokenBucket, Limit: 10, Period: 1000, Burst: 10, Cost: 1}}}
					}
					_, errs[i] = s.Eval(ctx, now, g)
				}(i)
			}
			wg.Wait()
			for i, err := range errs {
				if (i == 20) != (err != nil) {
					t.Errorf("call %d: %v", i, err)
				}
			}
		})
	}
}

// TestOverrideUnitOverflowRefused: a limit override whose unit × multiplier overflows (a year
// × 2^32-1 wrapped time.Duration into a negative period) or passes maxSpan is refused
// InvalidArgument; one within it is served.
func TestOverrideUnitOverflowRefused(t *testing.T) {
	svc := newTestService(t, NewMemoryStore(), newFakeClock(base), oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 5, Period: time.Minute}))
	ov := func(unit int32, mult uint32) *rlsv3.RateLimitRequest {
		q := req("test", []string{"k", "v"})
		q.Descriptors[0].Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 3, Unit: typev3.RateLimitUnit(unit), UnitMultiplier: wrapperspb.UInt32(mult)}
		return q
	}
	for _, q := range []*rlsv3.RateLimitRequest{ov(6, math.MaxUint32), ov(6, 51), ov(1, math.MaxUint32)} {
		if _, err := svc.ShouldRateLimit(context.Background(), q); !isInvalidArgument(err) {
			t.Errorf("%v: %v, want InvalidArgument", q.Descriptors[0].Limit, err)
		}
	}
	r, err := svc.ShouldRateLimit(context.Background(), ov(6, 50))
	if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].CurrentLimit.GetRequestsPerUnit() != 3 {
		t.Fatalf("50 years: %v %v", r, err)
	}
}

// TestRuleBoundsRejected: a rule whose numbers could leave the range both stores compute
// exactly (requests or burst above maxRequests, a period above maxSpan, a bucket that takes
// longer than maxSpan to refill) is reported on its object and left out; the others load.
func TestRuleBoundsRejected(t *testing.T) {
	bad := []ir.RateLimitRule{
		{Algorithm: ir.FixedWindow, Requests: maxRequests + 1, Period: time.Minute},
		{Algorithm: ir.SlidingWindow, Requests: 10, Period: maxSpan + time.Hour},
		{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Second, Burst: math.MaxUint64},
		{Algorithm: ir.LeakyBucket, Requests: 1, Period: time.Hour, Burst: 1 << 40},
		// Zero requests (a fixed window that admits nothing) still has a window end, past
		// 2^53 µs after 2255: Redis's reset was rounded to 2 µs.
		{Algorithm: ir.SlidingWindow, Requests: 0, Period: 280 * 365 * 24 * time.Hour},
	}
	d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{Key: "ok", Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 1, Period: time.Minute}}}}}
	for i, r := range bad {
		d.Descriptors = append(d.Descriptors, ir.RateLimitDescriptor{Key: fmt.Sprint("bad", i), Limits: []ir.RateLimitRule{r}})
	}
	rules, err := BuildRulesFromDomains(1, []ir.RateLimitDomain{d})
	if err == nil {
		t.Fatal("no error")
	}
	for i := range bad {
		if !strings.Contains(err.Error(), fmt.Sprint("descriptor bad", i, ":")) {
			t.Errorf("rule %d not reported: %v", i, err)
		}
		if lim, _ := rules.lookup("test", []entryView{{key: fmt.Sprint("bad", i)}}); lim != nil {
			t.Errorf("rule %d loaded", i)
		}
	}
	if lim, _ := rules.lookup("test", []entryView{{key: "ok"}}); lim == nil {
		t.Error("the valid rule was left out")
	}
}

// TestStoresAgreeAtNumericBounds drives both stores with the largest numbers the service lets
// through (limits and bursts of maxRequests, costs up to maxRequests+1, periods of maxSpan)
// and counts near them: the Redis script's doubles must give the memory store's exact answers
// (a count written back with Lua's tostring would lose digits past 10^14).
func TestStoresAgreeAtNumericBounds(t *testing.T) {
	mem := NewMemoryStore()
	red := newTestStore(t, "redis")
	now := base.UnixMicro()
	span := maxSpan.Microseconds()
	mk := func(alg Algorithm, key string, cost uint64) Check {
		c := Check{Key: "bounds:{" + key + "}", Alg: alg, Limit: maxRequests, Cost: cost}
		switch alg {
		case AlgFixedWindow:
			c.Period, c.WindowEnd = span, now+span
		case AlgSlidingWindow:
			c.Period = span
		default:
			c.Period, c.Burst = 1, maxRequests // T1 1 µs: capacity 2^50 µs
		}
		return c
	}
	for _, alg := range []Algorithm{AlgFixedWindow, AlgSlidingWindow, AlgTokenBucket, AlgLeakyBucket} {
		key := string(rune(alg))
		const big = math.MaxUint32
		steps := []uint64{maxRequests - big - 3, big, 2, big, 1, 1, 0, big - 1, maxRequests, maxRequests + 1}
		at := now
		admitted, denied := 0, 0
		for i, cost := range steps {
			g := [][]Check{{mk(alg, key, cost)}, {mk(alg, key+"2", cost), mk(AlgSlidingWindow, key+"2s", cost)}}
			a, err := mem.Eval(context.Background(), at, g)
			if err != nil {
				t.Fatal(err)
			}
			b, err := red.Eval(context.Background(), at, g)
			if err != nil {
				t.Fatalf("%c step %d: %v", alg, i, err)
			}
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("%c step %d (cost %d):\nmemory %+v\nredis  %+v", alg, i, cost, a, b)
			}
			if a[0][0].Allowed {
				admitted++
			} else {
				denied++
			}
			at += 1_000_003
		}
		if admitted < 3 || denied < 3 {
			t.Fatalf("%c: %d admitted, %d denied: the steps miss the bounds", alg, admitted, denied)
		}
	}
}

// TestHitsAddendBeyondUint32IsCounted: a descriptor's hits_addend is a uint64, and a limit may
// be counted in bytes (10 GB a day, hits_addend = body size). Costs of 4-5 GB are counted like
// any other on both stores (they were refused InvalidArgument, on which Envoy fails open: the
// largest uploads went through uncounted), and a cost no rule can hold is OVER_LIMIT.
func TestHitsAddendBeyondUint32IsCounted(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		t.Run(string(kind), func(t *testing.T) {
			store := &countingStore{Store: newTestStore(t, kind)}
			for _, alg := range []ir.RateLimitAlgorithm{ir.FixedWindow, ir.SlidingWindow, ir.TokenBucket} {
				svc := newTestService(t, store, newFakeClock(base), oneRuleDomain(ir.RateLimitRule{Algorithm: alg, Requests: 10_000_000_000, Period: 24 * time.Hour}))
				svc.prefix = "bytes:" + string(alg) + ":"
				for i, step := range []struct {
					cost uint64
					want rlsv3.RateLimitResponse_Code
				}{
					{5_000_000_000, rlsv3.RateLimitResponse_OK},
					{4_294_967_296, rlsv3.RateLimitResponse_OK},
					{math.MaxUint64, rlsv3.RateLimitResponse_OVER_LIMIT},
					{maxRequests + 1, rlsv3.RateLimitResponse_OVER_LIMIT},
					{705_032_705, rlsv3.RateLimitResponse_OVER_LIMIT},
					{705_032_704, rlsv3.RateLimitResponse_OK},
					{1, rlsv3.RateLimitResponse_OVER_LIMIT},
				} {
					r, err := svc.ShouldRateLimit(context.Background(), costReq(step.cost))
					if err != nil || r.OverallCode != step.want {
						t.Fatalf("%s step %d (cost %d): %v %v, want %v", alg, i, step.cost, r, err, step.want)
					}
				}
			}
		})
	}
}

// TestLongDescriptorValuesKeepKeysShort: descriptor values of 1 MB (a header Envoy passes
// through, a crafted request) made every counter key 1 MB, held in Redis or in the memory
// store for the counter's life: 64 such descriptors stored 64 MB per request. Keys stay
// short, and values that differ only in their last byte still count apart, on both stores.
func TestLongDescriptorValuesKeepKeysShort(t *testing.T) {
	for _, kind := range []storeKind{"memory", "redis"} {
		t.Run(string(kind), func(t *testing.T) {
			store := newTestStore(t, kind)
			svc := newTestService(t, store, newFakeClock(base), oneRuleDomain(ir.RateLimitRule{Algorithm: ir.SlidingWindow, Requests: 2, Period: time.Hour}))
			long := strings.Repeat("v", 1<<20)
			var descs [][]string
			for i := 0; i < 8; i++ {
				descs = append(descs, []string{"k", long + fmt.Sprint(i)})
			}
			for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
				r, err := svc.ShouldRateLimit(context.Background(), req("test", descs...))
				if err != nil || r.OverallCode != want {
					t.Fatalf("call %d: %v %v, want %v", i, r, err, want)
				}
				for j, st := range r.Statuses {
					if st.Code != want {
						t.Fatalf("call %d descriptor %d: %v", i, j, st.Code)
					}
				}
			}
			// A value differing in its last byte is another counter.
			if r, err := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", long + "x"})); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Fatalf("another long value: %v %v", r, err)
			}
			var keys []string
			switch s := store.(type) {
			case *MemoryStore:
				for i := range s.shards {
					for k := range s.shards[i].m {
						keys = append(keys, k)
					}
				}
			case *RedisStore:
				var err error
				if keys, err = s.Client().Keys(context.Background(), "*").Result(); err != nil {
					t.Fatal(err)
				}
			}
			if len(keys) != 9 {
				t.Fatalf("%d counters, want 9", len(keys))
			}
			for _, k := range keys {
				if len(k) > 1024 {
					t.Fatalf("a counter key of %d bytes", len(k))
				}
			}
		})
	}
}
