package ratelimit

import (
	"context"
	"testing"
	"time"
)

// reservingStoreTimeout is a ReservingStore whose inner RedisStore has the given timeout.
func reservingStoreTimeout(t testing.TB, addr string, hold, timeout time.Duration, clock Clock) *ReservingStore {
	t.Helper()
	c, err := NewRedisClient(addr + slowOK)
	if err != nil {
		t.Fatal(err)
	}
	s := NewReservingStore(NewRedisStore(c, RedisOptions{Timeout: timeout}), ReserveOptions{Hold: hold, Clock: clock})
	t.Cleanup(func() { s.Close() })
	return s
}

// readyToAsk calls s with cost-1 checks at now until s holds no unit of c's counter and its
// next visit asks for a reservation; it returns the units admitted and that reservation.
func readyToAsk(t testing.TB, s *ReservingStore, now int64, c Check, want uint64) (admitted, reserve uint64) {
	t.Helper()
	for i := 0; i < 5000; i++ {
		s.mu.Lock()
		l := s.leases[c.Key]
		if l != nil && l.avail == 0 && l.visit != 0 && l.asking == nil {
			reserve = min(s.size(l, now), (c.Limit-min(l.count, c.Limit))/16)
		}
		s.mu.Unlock()
		if reserve >= want {
			return admitted, reserve
		}
		reserve = 0
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if !rs[0][0].Allowed {
			t.Fatalf("denied while getting ready: %+v", rs[0][0])
		}
		admitted += c.Cost
	}
	t.Fatal("never ready to ask for units")
	return 0, 0
}

func fixedCheck(key string, limit uint64, now int64) Check {
	return Check{Key: key, Alg: AlgFixedWindow, Limit: limit, Period: 60_000_000, WindowEnd: now - now%60_000_000 + 60_000_000, Cost: 1}
}

// drain calls s with c until it is denied three times in a row and returns what it admitted.
func drain(t testing.TB, s Store, now int64, c Check) uint64 {
	t.Helper()
	var n uint64
	for run, i := 0, 0; run < 3; i++ {
		if i > 100_000 {
			t.Fatal("drain does not end")
		}
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0][0].Allowed {
			n += c.Cost
			run = 0
		} else {
			run++
		}
	}
	return n
}

// holdUnits calls s with c until s holds at least n units of c's counter; it returns the units
// admitted.
func holdUnits(t testing.TB, s *ReservingStore, now int64, c Check, n uint64) (admitted uint64) {
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
