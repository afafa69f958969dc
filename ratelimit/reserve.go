package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReserveOptions tune a ReservingStore.
type ReserveOptions struct {
	// Hold is how long units reserved and not yet used stay with this instance before they go
	// back to Redis (RATE_LIMIT_RESERVE). With the sweep every quarter hold, it bounds how
	// long (1.25 × Hold) another instance can be denied while this one holds units of the
	// same counter (plus a quarter hold for which that instance's over-limit cache may use
	// such a denial).
	Hold time.Duration
	// Max caps the units one reservation takes (default 256).
	Max uint64
	// Clock drives the background return of expired reservations (default the system clock;
	// requests use their own time).
	Clock Clock
}

// ReservingStore is a Store decorator that lets one instance admit most requests of a busy
// fixed-window counter without a round trip to the store it decorates (Redis), and never
// more than the limit across instances (RATE_LIMIT_RESERVE).
//
// When a single-check fixed-window group of cost 1 goes to the inner store, it asks for
// extra units with it (Check.Extra); the inner store charges them to the counter only as far
// as they fit under the limit, so the units held by all instances plus those admitted never
// exceed the limit. Later requests for that counter are admitted from the units held here
// (a lease), locally, until they run out; then the next visit asks again. The size of a
// reservation follows the counter's rate here (see size), and is at most a sixteenth of
// what the counter has left, so a counter near its limit is charged one request at a time,
// as without reservation. Units not used within Hold, or when the store closes, are
// refunded (RefundStore.Refund).
//
// The trade: a request that finds no units here while another instance holds some can be
// denied although the limit is not reached, for at most 1.5 × Hold after they were
// reserved. Requests on one instance, one at a time, get the answers the inner store gives
// (same admissions, same remaining counts), and the counter never lets the instances
// together admit more than the limit. Other algorithms and checks of cost 0 go to the
// inner store as they are; a request that names one counter twice first gives its units
// back and goes as it is.
//
// Lease invariants (mu held; asserted by checkInvariants, see reserve_invariants_test.go):
//
//  1. One lease per counter key, for one window and one limit: a check of another window
//     end or limit never takes units from it (the lease is replaced, its units refunded).
//  2. avail ≤ count ≤ limit: the units held are part of the counter as this instance last
//     saw it, which never passes the limit.
//  3. Conservation: units are charged to the counter before they are held, and leave a
//     lease only by admitting a request (admit) or by a refund (release). Across instances,
//     counter = admitted + Σ avail + units whose refund failed after it may have run.
//  4. A visit in flight (inflight > 0) keeps its lease until the window ends: a sweep
//     neither releases nor forgets it, and a check of another window or limit goes to the
//     inner store as it is instead of replacing it; asking is set only while one of those
//     visits asks for units.
//  5. Units are held for at most Hold plus a sweep period (a quarter hold) after the visit
//     that reserved them, unless a visit is still in flight: Sweep(now ≥ expires) releases
//     every idle lease whose hold has passed, and forgets one whose window has ended.
//  6. At most maxLeases leases; past it new counters go to the inner store as they are.
type ReservingStore struct {
	inner RefundStore
	opts  ReserveOptions
	hold  int64 // µs

	mu     sync.RWMutex
	leases map[string]*lease
	closed bool
	evals  sync.WaitGroup // Evals in flight (Close waits for them)
	bg     sync.WaitGroup // give-backs a request started (Close waits for them)

	stop chan struct{}
	done chan struct{}

	// units: api_gateway_rate_limit_reserved_units_total{event}: reserved, used, returned.
	units                    *prometheus.CounterVec
	reserved, used, returned prometheus.Counter
}

// maxLeases bounds the counters one instance tracks (about 200 bytes each): past it, new
// counters are charged as without reservation until idle leases are forgotten.
const maxLeases = 1 << 16

// NewReservingStore wraps a store that charges extra units and refunds them (the Redis
// store). Hold must be positive.
func NewReservingStore(inner RefundStore, opts ReserveOptions) *ReservingStore {
	if opts.Max == 0 {
		opts.Max = 256
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock()
	}
	s := &ReservingStore{inner: inner, opts: opts, hold: opts.Hold.Microseconds(), leases: map[string]*lease{},
		stop: make(chan struct{}), done: make(chan struct{})}
	s.units = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricsNamespaceR + "reserved_units_total",
		Help: "Fixed-window units this instance reserved from Redis (event=reserved), admitted from them without a round trip (used) and gave back unused (returned).",
	}, []string{"event"})
	s.reserved, s.used, s.returned = s.units.WithLabelValues("reserved"), s.units.WithLabelValues("used"), s.units.WithLabelValues("returned")
	go s.sweeper()
	return s
}

// Name returns the inner store's name ("redis").
func (s *ReservingStore) Name() string { return s.inner.Name() }

func (s *ReservingStore) holds(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l := s.leases[key]
	return l != nil && l.avail > 0
}

func (s *ReservingStore) denialTTL() int64 { return max(s.hold/4, 1) }

// Collectors returns the store's metrics (the service registers them).
func (s *ReservingStore) Collectors() []prometheus.Collector { return []prometheus.Collector{s.units} }

// Inner returns the store it decorates.
func (s *ReservingStore) Inner() RefundStore { return s.inner }

// Close waits for the requests in flight, gives every unit held back and closes the Redis
// store. Later requests get an error.
func (s *ReservingStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.evals.Wait()
	s.bg.Wait()
	close(s.stop)
	<-s.done
	s.sweep(s.opts.Clock.Now().UnixMicro(), true)
	return s.inner.Close()
}

// taking is a fixed-window check of a group sent to Redis with units held here.
type taking struct {
	fi, ci int    // forwarded group and check
	l      *lease //
	cost   uint64 // the check's cost
	taken  uint64 // units of it taken from l.avail (Redis is asked for the rest)
	asked  bool   // this visit asks for extra units (l.asking)
	single bool   // the group is this one check
}

// leaseFor returns the lease of c's counter, creating it when create is set; nil when there
// is none or it is busy with another window or limit. A lease of another window or limit
// is dropped (the units it holds go back, unless their counter ended with its window).
func (s *ReservingStore) leaseFor(c *Check, create bool, back *[]heldUnits) *lease {
	l := s.leases[c.Key]
	if l != nil && (l.windowEnd != c.WindowEnd || l.limit != c.Limit) {
		if l.inflight > 0 {
			return nil
		}
		if l.windowEnd == c.WindowEnd {
			*back = s.release(*back, c.Key, l)
		}
		delete(s.leases, c.Key)
		l = nil
	}
	if l == nil && create && len(s.leases) < maxLeases {
		l = &lease{windowEnd: c.WindowEnd, limit: c.Limit}
		s.leases[c.Key] = l
	}
	return l
}

// repeated returns the fixed-window keys a request names more than once (nil for none).
func repeated(groups [][]Check) map[string]bool {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	if n < 2 {
		return nil
	}
	var dup map[string]bool
	for gi, g := range groups {
		for ci := range g {
			c := &g[ci]
			if c.Alg != AlgFixedWindow || dup[c.Key] {
				continue
			}
			for gj := gi; gj < len(groups); gj++ {
				cj := 0
				if gj == gi {
					cj = ci + 1
				}
				for ; cj < len(groups[gj]); cj++ {
					if groups[gj][cj].Key == c.Key {
						if dup == nil {
							dup = map[string]bool{}
						}
						dup[c.Key] = true
					}
				}
			}
		}
	}
	return dup
}

// Eval admits what the units held cover and sends the rest to Redis, asking for units where
// a counter is busy. A check sent to Redis uses the units held first and charges only the
// rest, so one instance's answers are those of the Redis store.
func (s *ReservingStore) Eval(ctx context.Context, now int64, groups [][]Check) ([][]Result, error) {
	if len(groups) == 1 && len(groups[0]) == 1 {
		if r, ok := s.evalLocal(&groups[0][0], now); ok {
			a := &struct {
				out [1][]Result
				res [1]Result
			}{}
			a.res[0] = r
			a.out[0] = a.res[:]
			return a.out[:], nil
		}
	}
	dup := repeated(groups)
	out := make([][]Result, len(groups))
	var fwd [][]Check
	var fwdIdx []int // groups index of each forwarded group
	var takings []taking
	var local []taking // admitted here (fi = groups index); given back if the store fails
	var back []heldUnits
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStoreClosed
	}
	s.evals.Add(1)
	defer s.evals.Done()
	// A counter named twice: its units go back first, and its checks go as they are (the
	// order Redis runs them in decides their answers, as without reservation).
	for key := range dup {
		if l := s.leases[key]; l != nil {
			back = s.release(back, key, l)
		}
	}
	for gi, g := range groups {
		single := len(g) == 1 && g[0].Alg == AlgFixedWindow && g[0].Cost > 0 && now < g[0].WindowEnd && !dup[g[0].Key]
		if single {
			c := &g[0]
			if l := s.leaseFor(c, true, &back); l != nil && l.avail >= c.Cost {
				out[gi] = []Result{l.admit(c.Cost, now)}
				local = append(local, taking{fi: gi, l: l, cost: c.Cost, taken: c.Cost})
				continue
			}
		}
		fi := len(fwd)
		fg, copied := g, false
		for ci := range g {
			c := &g[ci]
			if c.Alg != AlgFixedWindow || now >= c.WindowEnd || dup[c.Key] {
				continue
			}
			l := s.leaseFor(c, false, &back)
			if l == nil {
				continue
			}
			t := taking{fi: fi, ci: ci, l: l, cost: c.Cost, taken: min(l.avail, c.Cost), single: single}
			var extra uint64
			if single && l.asking == nil && c.Cost-t.taken == 1 {
				extra = min(s.size(l, now), (c.Limit-min(l.count, c.Limit))/16)
				t.asked = extra > 0
			}
			if t.taken > 0 || t.asked {
				if !copied {
					fg, copied = append([]Check(nil), g...), true
				}
				fg[ci].Cost -= t.taken
				fg[ci].Extra = extra
			}
			l.avail -= t.taken
			l.inflight++
			if t.asked {
				l.asking = make(chan struct{})
			}
			takings = append(takings, t)
		}
		fwd = append(fwd, fg)
		fwdIdx = append(fwdIdx, gi)
	}
	if len(fwd) > 0 {
		// The request goes on: its local admissions keep their leases until it ends (they may
		// be undone).
		for _, t := range local {
			t.l.inflight++
		}
	}
	s.mu.Unlock()
	if len(back) > 0 {
		// Before anything is sent: a repeated counter's units must be back first. On a
		// goroutine of its own, not bound to the request: units released here and not given
		// back would be lost; the request waits for it, or leaves at its deadline.
		done := make(chan struct{})
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			defer close(done)
			s.giveBack(context.Background(), back)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.mu.Lock()
			endLocal(local, true)
			for _, t := range takings {
				t.l.avail += t.taken
				s.visited(t)
			}
			s.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	nlocal := uint64(0)
	for _, t := range local {
		nlocal += t.taken
	}
	if len(fwd) == 0 {
		s.used.Add(float64(nlocal))
		return out, nil
	}
	res, err := s.inner.Eval(ctx, now, fwd)
	s.mu.Lock()
	if err != nil {
		// The fail mode applies to the whole request: the units taken here stay unused (the
		// Redis store gives back what it reserved for a call that failed).
		endLocal(local, true)
		for _, t := range takings {
			t.l.avail += t.taken
			s.visited(t)
		}
		s.mu.Unlock()
		return nil, err
	}
	for fi, gi := range fwdIdx {
		out[gi] = res[fi]
	}
	endLocal(local, false)
	// First every lease takes what this request reserved and used, then the answers are
	// adjusted: a check's remaining count is Redis's plus the units held here.
	for _, t := range takings {
		rs := res[t.fi]
		admitted := allAllowed(rs)
		l, r, limit := t.l, &rs[t.ci], fwd[t.fi][t.ci].Limit
		s.visited(t)
		if !admitted {
			l.avail += t.taken // not used: still held
		}
		// The counter in Redis, held units included (the charge of this request and the units
		// reserved with it, when admitted).
		l.count = max(l.count, limit-min(r.Remaining, limit))
		if t.single && admitted && (t.asked || l.visit == 0) {
			// The rate is measured from here: units reserved now, used from now on.
			l.visit, l.grant, l.used = now, r.Extra, 0
		}
		if admitted {
			l.used += fwd[t.fi][t.ci].Cost + t.taken
			l.touched = now
		}
		if r.Extra > 0 {
			s.reserved.Add(float64(r.Extra))
			l.avail += r.Extra
			l.expires = now + s.hold
			r.Extra = 0
		}
	}
	var waits []taking
	for _, t := range takings {
		r := &res[t.fi][t.ci]
		r.Remaining = min(r.Remaining+t.l.avail, t.l.limit)
		if t.single && !r.Allowed {
			if !s.useHeld(t, r, now, &nlocal) && t.l.asking != nil {
				waits = append(waits, t)
			}
		}
	}
	s.mu.Unlock()
	// Denied while another request of this instance is reserving units of the counter (it
	// may have taken the last ones): wait for it, and use its units.
	for _, t := range waits {
		s.mu.RLock()
		ch := t.l.asking
		s.mu.RUnlock()
		if ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				continue
			}
		}
		s.mu.Lock()
		s.useHeld(t, &res[t.fi][t.ci], now, &nlocal)
		s.mu.Unlock()
	}
	s.used.Add(float64(nlocal))
	return out, nil
}

// evalLocal admits a request of one check from the units held here, when its lease covers
// it as it is (same window, same limit, enough units): the common request, answered as the
// general path below would, without its bookkeeping. ok is false when the request must take
// that path (and nothing was changed).
func (s *ReservingStore) evalLocal(c *Check, now int64) (r Result, ok bool) {
	if c.Alg != AlgFixedWindow || c.Cost == 0 || now >= c.WindowEnd {
		return Result{}, false
	}
	s.mu.Lock()
	l := s.leases[c.Key]
	if s.closed || l == nil || l.windowEnd != c.WindowEnd || l.limit != c.Limit || l.avail < c.Cost {
		s.mu.Unlock()
		return Result{}, false
	}
	r = l.admit(c.Cost, now)
	s.mu.Unlock()
	s.used.Add(float64(c.Cost))
	return r, true
}

// endLocal ends the local admissions of a request that also went to Redis (mu held); undo
// puts their units back in their leases (the request failed).
func endLocal(local []taking, undo bool) {
	for _, t := range local {
		if undo {
			t.l.avail += t.taken
			t.l.used -= min(t.taken, t.l.used)
		}
		t.l.inflight--
	}
}

// visited ends t's visit on its lease (mu held).
func (s *ReservingStore) visited(t taking) {
	t.l.inflight--
	if t.asked {
		close(t.l.asking)
		t.l.asking = nil
	}
}

// useHeld admits a single check that Redis denied from units held here, when there are
// enough (units another request of this instance reserved meanwhile), and reports whether
// the check is admitted (mu held).
func (s *ReservingStore) useHeld(t taking, r *Result, now int64, n *uint64) bool {
	if r.Allowed || t.l.avail < t.cost {
		return r.Allowed
	}
	*r = t.l.admit(t.cost, now)
	*n += t.cost
	return true
}

func allAllowed(rs []Result) bool {
	for i := range rs {
		if !rs[i].Allowed {
			return false
		}
	}
	return true
}
