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
		checks[i] = fixedCheck(fmt.Sprintf("rsv:stress%d:{k}", i), l, now)
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
				c := Check{Key: fmt.Sprintf("rsv:roll%d:{k}:%d", ri, ws), Alg: AlgFixedWindow, Limit: limitAt(rules[ri], now),
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
		if _, err := fmt.Sscanf(key, "rsv:roll%d:{k}:%d", &ri, &ws); err != nil {
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
			checks = append(checks, fixedCheck(fmt.Sprintf("rsv:cl%d:{key%d}", i, k), l, now))
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
