package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// lease is what this instance knows and holds of one fixed-window counter.
type lease struct {
	windowEnd int64
	limit     uint64
	avail     uint64 // units charged to the counter and not yet admitted here
	count     uint64 // the counter after this instance's last visit
	grant     uint64 // units reserved at the last visit that asked
	visit     int64  // µs: that visit (0: none yet)
	used      uint64 // units admitted since then (the visit's own request included)
	expires   int64  // µs: after it, avail goes back
	touched   int64  // µs: last request (a lease idle for two holds is forgotten)
	inflight  int    // visits in flight (the lease is kept while any is)
	// asking is closed when the visit in flight that asks for units is answered (nil when
	// none is): one visit at a time asks.
	asking chan struct{}
}

// size is the number of units a visit to a counter asks for: what lasts a hold at the rate
// its units were used since the last reservation (what is left at the end goes back), at
// most four times that reservation plus one (a counter's first reservations grow 1, 5, 21,
// …) and Max; none on the first visit (a counter seen once is charged as without reservation).
func (s *ReservingStore) size(l *lease, now int64) uint64 {
	if l.visit == 0 {
		return 0
	}
	el := uint64(max(now-l.visit, 1))
	want := l.used * uint64(s.hold) / el
	if l.used > 0 && uint64(s.hold) > (1<<63)/l.used {
		want = s.opts.Max // the product would overflow: a very busy counter
	}
	return min(want, 4*l.grant+1, s.opts.Max)
}

func (s *ReservingStore) sweeper() {
	defer close(s.done)
	t := time.NewTicker(max(s.opts.Hold/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep(s.opts.Clock.Now().UnixMicro())
		}
	}
}

// Sweep gives back the units of reservations expired at now (µs) and forgets counters whose
// window has ended.
func (s *ReservingStore) Sweep(now int64) { s.sweep(now, false) }

// sweep is Sweep; all gives back every unit held (Close).
func (s *ReservingStore) sweep(now int64, all bool) {
	var back []heldUnits
	s.mu.Lock()
	for key, l := range s.leases {
		switch {
		case now >= l.windowEnd:
			delete(s.leases, key) // the counter is gone with its window
		case l.inflight > 0:
		case all || (now >= l.expires && l.avail > 0):
			back = s.release(back, key, l)
			if all {
				delete(s.leases, key)
			}
		case now-l.touched >= 2*s.hold && l.avail == 0:
			delete(s.leases, key)
		}
	}
	s.mu.Unlock()
	s.giveBack(context.Background(), back)
}

// release takes the units l holds out of it, to be given back (mu held).
func (s *ReservingStore) release(back []heldUnits, key string, l *lease) []heldUnits {
	if l.avail == 0 {
		return back
	}
	back = append(back, heldUnits{Refund{Key: key, N: int64(l.avail)}, l, l.count})
	l.count -= min(l.avail, l.count)
	l.avail = 0
	return back
}

// heldUnits are units taken out of a lease to be given back.
type heldUnits struct {
	Refund
	l     *lease
	count uint64 // l.count before the release
}

// giveBack returns unused units to their counters (the store bounds how long it tries).
// Units whose give-back surely did not reach the store go back to their lease, if it is
// still the counter's, for a later sweep; after any other failure (a timeout: it may have
// run) they are dropped: the counter may keep them until its window ends, which can only
// deny, never over-admit.
func (s *ReservingStore) giveBack(ctx context.Context, back []heldUnits) {
	if len(back) == 0 {
		return
	}
	units := make([]Refund, len(back))
	for i := range back {
		units[i] = back[i].Refund
	}
	n, unsent := s.inner.Refund(ctx, units)
	s.returned.Add(float64(n))
	if len(unsent) == 0 {
		return
	}
	s.mu.Lock()
	for _, i := range unsent {
		if u := back[i]; u.l != nil && s.leases[u.Key] == u.l {
			u.l.avail += uint64(u.N)
			// The counter still holds the units. A visit since the release may have seen it
			// (its count includes them already): the count goes back to what it was at the
			// release unless a visit saw more, never adding them twice (avail ≤ count ≤ limit).
			u.l.count = max(u.l.count, u.count)
		}
	}
	s.mu.Unlock()
}

// admit admits a request of cost from the units held (mu held; l.avail >= cost).
func (l *lease) admit(cost uint64, now int64) Result {
	l.avail -= cost
	l.used += cost
	l.touched = now
	return Result{Allowed: true, Remaining: l.limit - min(l.count-l.avail, l.limit), Reset: l.windowEnd - now}
}

// checkInvariants reports the first lease invariant (see ReservingStore) that does not hold
// at now (µs), or nil. swept: a Sweep(now) has run since the last visit, so no idle lease
// may hold units past its expiry.
func (s *ReservingStore) checkInvariants(now int64, swept bool) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.leases) > maxLeases {
		return fmt.Errorf("%d leases, at most %d", len(s.leases), maxLeases)
	}
	for key, l := range s.leases {
		switch {
		case l.avail > l.count || l.count > l.limit:
			return fmt.Errorf("lease %q: avail %d, count %d, limit %d: want avail ≤ count ≤ limit", key, l.avail, l.count, l.limit)
		case l.inflight < 0:
			return fmt.Errorf("lease %q: %d visits in flight", key, l.inflight)
		case l.asking != nil && l.inflight == 0:
			return fmt.Errorf("lease %q: asking for units with no visit in flight", key)
		case l.avail > 0 && l.expires > l.visit+s.hold && l.visit != 0:
			return fmt.Errorf("lease %q: held until %d, more than a hold after its visit at %d", key, l.expires, l.visit)
		case swept && l.inflight == 0 && l.avail > 0 && now >= l.expires:
			return fmt.Errorf("lease %q: %d units held past their expiry after a sweep", key, l.avail)
		case swept && l.inflight == 0 && now >= l.windowEnd:
			return fmt.Errorf("lease %q: kept after its window ended", key)
		}
	}
	return nil
}

// held returns the units this instance holds of key's counter.
func (s *ReservingStore) held(key string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if l := s.leases[key]; l != nil {
		return l.avail
	}
	return 0
}
