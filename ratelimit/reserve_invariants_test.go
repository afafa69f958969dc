package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// TestReservingLeaseInvariants drives three reserving instances on one Redis with concurrent
// callers over counters of different limits, and checks the lease invariants written at
// ReservingStore after every phase: each lease within avail ≤ count ≤ limit and its hold,
// conservation (the counter in Redis is what was admitted plus what the instances hold, and
// never lets them admit more than the limit), units back within a hold after a sweep,
// leases replaced when the limit changes and forgotten when the window ends.
func TestReservingLeaseInvariants(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	const hold = time.Second
	stores := []*ReservingStore{
		newReservingStore(t, r.Addr, hold, clock),
		newReservingStore(t, r.Addr, hold, clock),
		newReservingStore(t, r.Addr, hold, clock),
	}
	rc := stores[0].Inner().(*RedisStore).Client()
	limits := map[string]uint64{"inv:a:{k}": 40, "inv:b:{k}": 300, "inv:c:{k}": 5000}
	admitted := map[string]*atomic.Uint64{}
	for k := range limits {
		admitted[k] = &atomic.Uint64{}
	}
	keys := []string{"inv:a:{k}", "inv:b:{k}", "inv:c:{k}"}

	check := func(phase string, now int64, swept bool) {
		t.Helper()
		for i, s := range stores {
			if err := s.checkInvariants(now, swept); err != nil {
				t.Fatalf("%s: instance %d: %v", phase, i, err)
			}
		}
		for _, k := range keys {
			held := uint64(0)
			for _, s := range stores {
				held += s.held(k)
			}
			got, adm := uint64(counter(t, rc, k)), admitted[k].Load()
			if got != adm+held {
				t.Fatalf("%s: counter %s is %d in Redis, want %d admitted + %d held", phase, k, got, adm, held)
			}
			if adm > limits[k] {
				t.Fatalf("%s: %d admitted on %s, limit %d", phase, adm, k, limits[k])
			}
			if swept && held != 0 {
				t.Fatalf("%s: %d units of %s still held after a sweep past the hold", phase, held, k)
			}
		}
	}

	load := func(now int64, calls int, seed int64) {
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				rnd := rand.New(rand.NewSource(seed + int64(g)))
				for range calls {
					k := keys[rnd.Intn(len(keys))]
					s := stores[rnd.Intn(len(stores))]
					c := fixedCheck(k, limits[k], now)
					groups := [][]Check{{c}}
					if rnd.Intn(10) == 0 {
						// A request naming the counter twice: its units go back first.
						groups = append(groups, []Check{c})
					}
					res, err := s.Eval(context.Background(), now, groups)
					if err != nil {
						t.Error(err)
						return
					}
					for _, rs := range res {
						if rs[0].Allowed {
							admitted[k].Add(1)
						}
					}
				}
			}(g)
		}
		wg.Wait()
	}

	now := base.UnixMicro()
	for phase := range 4 {
		// Within one hold: units stay held, the counters only grow.
		for step := range 3 {
			at := now + int64(step)*100_000
			clock.Set(time.UnixMicro(at))
			load(at, 150, int64(phase*10+step))
			check(fmt.Sprintf("phase %d step %d", phase, step), at, false)
		}
		// Past the hold and its sweep period: every unit held is back.
		now += int64(hold/time.Microsecond) * 2
		clock.Set(time.UnixMicro(now))
		for _, s := range stores {
			s.Sweep(now)
		}
		check(fmt.Sprintf("phase %d swept", phase), now, true)
		if t.Failed() {
			return
		}
	}

	// A limit change replaces the lease: the old units go back, the new lease has the new
	// limit (invariant 1).
	k := "inv:d:{k}"
	limits[k], admitted[k] = 5000, &atomic.Uint64{}
	keys = append(keys, k)
	for range 50 {
		if res, _ := stores[0].Eval(context.Background(), now, [][]Check{{fixedCheck(k, limits[k], now)}}); res != nil && res[0][0].Allowed {
			admitted[k].Add(1)
		}
	}
	if stores[0].held(k) == 0 {
		t.Fatal("a busy counter holds no units")
	}
	limits[k] = 4000
	if res, err := stores[0].Eval(context.Background(), now, [][]Check{{fixedCheck(k, limits[k], now)}}); err != nil {
		t.Fatal(err)
	} else if res[0][0].Allowed {
		admitted[k].Add(1)
	}
	stores[0].mu.RLock()
	l := stores[0].leases[k]
	stores[0].mu.RUnlock()
	if l == nil || l.limit != 4000 {
		t.Fatalf("after a limit change the lease is %+v, want one for limit 4000", l)
	}
	check("limit change", now, false)

	// The window ends: leases are forgotten at the next sweep (invariant 5).
	end := fixedCheck(k, 1, now).WindowEnd
	clock.Set(time.UnixMicro(end))
	for i, s := range stores {
		s.Sweep(end)
		s.mu.RLock()
		n := len(s.leases)
		s.mu.RUnlock()
		if n != 0 {
			t.Errorf("instance %d keeps %d leases after their window ended", i, n)
		}
	}
}

// TestReservingLeaseCap: past maxLeases counters an instance charges new counters as
// without reservation (invariant 6), and they are still counted exactly.
func TestReservingLeaseCap(t *testing.T) {
	r := itest.StartRedis(t)
	clock := newFakeClock(base)
	s := newReservingStore(t, r.Addr, time.Minute, clock)
	now := base.UnixMicro()
	filler := fixedCheck("cap:filler", 10, now)
	s.mu.Lock()
	for i := range maxLeases {
		s.leases[fmt.Sprintf("cap:%d", i)] = &lease{windowEnd: filler.WindowEnd, limit: 10}
	}
	s.mu.Unlock()
	c := fixedCheck("cap:new:{k}", 100, now)
	for i := range 10 {
		res, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if !res[0][0].Allowed || res[0][0].Remaining != uint64(100-i-1) {
			t.Fatalf("call %d: %+v, want admitted with %d remaining", i, res[0][0], 100-i-1)
		}
	}
	if err := s.checkInvariants(now, false); err != nil {
		t.Fatal(err)
	}
	if v := counter(t, s.Inner().(*RedisStore).Client(), c.Key); v != 10 {
		t.Fatalf("counter %d, want 10 (nothing reserved past the cap)", v)
	}
}
