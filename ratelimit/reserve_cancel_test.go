package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// cancelingCtx returns a context that ends at a random moment around a local Redis round
// trip (already canceled, a deadline of 0-400µs, canceled by another goroutine after 0-400µs,
// or none), so callers give up while their pipeline is queued, in flight, or being answered.
func cancelingCtx(rng *rand.Rand) (context.Context, context.CancelFunc) {
	switch rng.Intn(5) {
	case 0:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, cancel
	case 1:
		return context.WithTimeout(context.Background(), time.Duration(rng.Intn(400))*time.Microsecond)
	case 2:
		ctx, cancel := context.WithCancel(context.Background())
		d := time.Duration(rng.Intn(400)) * time.Microsecond
		go func() {
			time.Sleep(d)
			cancel()
		}()
		return ctx, cancel
	default:
		return context.WithCancel(context.Background())
	}
}

// answer is a result a caller got, and a copy taken when it got it: a recycled call must
// never write into an answer its caller holds.
type answer struct {
	got  [][]Result
	seen [][]Result
}

func keep(rs [][]Result) answer {
	a := answer{got: rs, seen: make([][]Result, len(rs))}
	for i := range rs {
		a.seen[i] = slices.Clone(rs[i])
	}
	return a
}

func checkAnswers(t *testing.T, answers []answer) {
	t.Helper()
	for _, a := range answers {
		for i := range a.got {
			if !slices.Equal(a.got[i], a.seen[i]) {
				t.Fatalf("an answer changed after its caller got it: %+v, then %+v", a.seen[i], a.got[i])
			}
		}
	}
}

// TestRedisExtraUnitsCanceledCallers: callers of the Redis store ask for extra units and give
// up at random moments around the reply. Per counter, once the store is closed (it waits for
// the give-backs of abandoned calls): the counter holds at least what the answered callers
// were charged (cost and extra units: a refund never runs twice, nor for units a caller
// received), at most that plus one unit per caller that gave up (its cost may have been
// charged; never its extra units), and never more than the limit. Answers never change after
// their caller got them (calls are recycled).
func TestRedisExtraUnitsCanceledCallers(t *testing.T) {
	r := itest.StartRedis(t)
	s := NewRedisStore(mustClient(t, r.Addr), RedisOptions{Timeout: 5 * time.Second})
	now := base.UnixMicro()
	limits := []uint64{40, 300, 100_000}
	checks := make([]Check, len(limits))
	for i, l := range limits {
		checks[i] = fixedCheck(fmt.Sprintf("xcancel%d:{k}", i), l, now)
	}
	charged := make([]atomic.Uint64, len(limits))
	gaveUp := make([]atomic.Uint64, len(limits))
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for w := 0; w < 24; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			var mine []answer
			for i := 0; i < 300; i++ {
				k := rng.Intn(len(limits))
				c := checks[k]
				c.Extra = uint64(rng.Intn(20))
				groups := [][]Check{{c}}
				k2 := -1
				if rng.Intn(6) == 0 { // a second group: a call of several groups
					k2 = (k + 1) % len(limits)
					groups = append(groups, []Check{checks[k2]})
				}
				ctx, cancel := cancelingCtx(rng)
				rs, err := s.Eval(ctx, now, groups)
				cancel()
				if err != nil {
					gaveUp[k].Add(1)
					if k2 >= 0 {
						gaveUp[k2].Add(1)
					}
					continue
				}
				mine = append(mine, keep(rs))
				for gi, g := range groups {
					r := rs[gi][0]
					if r.Extra > g[0].Extra || (!r.Allowed && r.Extra > 0) {
						t.Errorf("extra units %d for a check asking %d: %+v", r.Extra, g[0].Extra, r)
					}
					if r.Allowed {
						kk := k
						if gi == 1 {
							kk = k2
						}
						charged[kk].Add(g[0].Cost + r.Extra)
					}
				}
			}
			mu.Lock()
			answers = append(answers, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond) // recycled calls that are still written to are written now
	checkAnswers(t, answers)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	for i, c := range checks {
		v := uint64(counter(t, rc, c.Key))
		lo, hi := charged[i].Load(), charged[i].Load()+gaveUp[i].Load()
		t.Logf("counter %d (limit %d): %d; charged to answered callers %d, callers that gave up %d", i, c.Limit, v, lo, gaveUp[i].Load())
		if v < lo || v > hi || lo > c.Limit {
			t.Errorf("counter %d (limit %d): %d, want between %d and %d", i, c.Limit, v, lo, min(hi, c.Limit))
		}
	}
}

// TestReservingCanceledCallers: three reserving instances whose callers give up at random
// moments around the reply (costs 0-2, sometimes two groups). Per counter: never more
// admitted than the limit; once the instances are closed (every unit held given back), the
// counter holds what was admitted plus at most the cost of the requests whose callers gave up
// (their charge may have run). Answers never change after their caller got them.
func TestReservingCanceledCallers(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	var stores []*ReservingStore
	for i := 0; i < 3; i++ {
		stores = append(stores, newReservingStore(t, r.Addr, 50*time.Millisecond, clock))
	}
	limits := []uint64{5, 120, 2000, 1_000_000}
	checks := make([]Check, len(limits))
	for i, l := range limits {
		checks[i] = fixedCheck(fmt.Sprintf("rcancel%d:{k}", i), l, now)
	}
	admitted := make([]atomic.Uint64, len(limits))
	gaveUp := make([]atomic.Uint64, len(limits))
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for w := 0; w < 30; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(100 + w)))
			s := stores[w%len(stores)]
			var mine []answer
			for i := 0; i < 400; i++ {
				k := rng.Intn(len(limits))
				ks := []int{k}
				c := checks[k]
				c.Cost = []uint64{1, 1, 1, 1, 1, 2, 0}[rng.Intn(7)]
				groups := [][]Check{{c}}
				if rng.Intn(8) == 0 {
					k2 := (k + 1) % len(limits)
					ks = append(ks, k2)
					groups = append(groups, []Check{checks[k2]})
				}
				ctx, cancel := cancelingCtx(rng)
				rs, err := s.Eval(ctx, now, groups)
				cancel()
				if err != nil {
					for gi, kk := range ks {
						gaveUp[kk].Add(groups[gi][0].Cost)
					}
					continue
				}
				mine = append(mine, keep(rs))
				for gi, kk := range ks {
					if rs[gi][0].Allowed {
						admitted[kk].Add(groups[gi][0].Cost)
					}
				}
				if rng.Intn(50) == 0 {
					s.Sweep(now + 60_000)
				}
			}
			mu.Lock()
			answers = append(answers, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond)
	checkAnswers(t, answers)
	for _, s := range stores {
		if err := s.checkInvariants(now, false); err != nil {
			t.Error(err)
		}
	}
	for _, s := range stores {
		s.Close()
	}
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	for i, c := range checks {
		v := uint64(counter(t, rc, c.Key))
		adm := admitted[i].Load()
		t.Logf("counter %d (limit %d): %d; admitted %d, cost of requests given up %d", i, c.Limit, v, adm, gaveUp[i].Load())
		if adm > c.Limit {
			t.Errorf("counter %d (limit %d): admitted %d", i, c.Limit, adm)
		}
		if v < adm || v > adm+gaveUp[i].Load() {
			t.Errorf("counter %d (limit %d): %d after Close, want between admitted %d and %d", i, c.Limit, v, adm, adm+gaveUp[i].Load())
		}
	}
}
