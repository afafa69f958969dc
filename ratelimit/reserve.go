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
	// back to Redis (RATE_LIMIT_RESERVE). It bounds how long another instance can be denied
	// while this one holds units of the same counter.
	Hold time.Duration
	// Max caps the units one reservation takes (default 256).
	Max uint64
	// Clock drives the background return of expired reservations (default the system clock;
	// requests use their own time).
	Clock Clock
}

// ReservingStore lets one instance admit most requests of a busy fixed-window counter
// without a round trip to Redis, and never more than the limit across instances.
//
// When a single-check fixed-window group goes to Redis, it asks for extra units with it
// (Check.Reserve); Redis charges them to the counter only when they fit under the limit
// (see fixedNative), so the units held by all instances plus those admitted never exceed the
// limit. Later requests for that counter are admitted from the units held, locally, until
// they run out; then the next visit reserves again. The size of a reservation follows the
// counter's rate here (see size), and is at most a sixteenth of what the counter has left,
// so a counter near its limit is charged one request at a time, as without reservation.
// Units not used within Hold, or when the store closes, are given back to the counter.
//
// The trade: a request that finds no units here while another instance holds some can be
// denied although the limit is not reached, for at most Hold. Answers on one instance are
// the ones the Redis store gives (same admissions, same remaining counts), and the counter
// in Redis never lets the instances together admit more than the limit. Other algorithms,
// groups of several checks and checks of cost 0 go to the store as they are.
type ReservingStore struct {
	inner *RedisStore
	opts  ReserveOptions
	hold  int64 // µs

	mu     sync.RWMutex
	leases map[string]*lease
	closed bool

	stop chan struct{}
	done chan struct{}

	// units: api_gateway_rate_limit_reserved_units_total{event}: reserved, used, returned.
	units                    *prometheus.CounterVec
	reserved, used, returned prometheus.Counter
}

// maxLeases bounds the counters one instance tracks (about 200 bytes each): past it, new
// counters are charged as without reservation until idle leases are forgotten.
const maxLeases = 1 << 16

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
	pending   bool   // a visit asking for extra units is in flight
	inflight  int    // visits in flight (the lease is kept while any is)
}

// NewReservingStore wraps a Redis store. Hold must be positive.
func NewReservingStore(inner *RedisStore, opts ReserveOptions) *ReservingStore {
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

// unitHolder is a store that holds reserved units (the service's over-limit cache asks it).
type unitHolder interface {
	holds(key string) bool // units of key's counter are held here
	holdTime() int64       // µs: units held elsewhere come back within it
}

func (s *ReservingStore) holds(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l := s.leases[key]
	return l != nil && l.avail > 0
}

func (s *ReservingStore) holdTime() int64 { return s.hold }

// Collectors returns the store's metrics (the service registers them).
func (s *ReservingStore) Collectors() []prometheus.Collector { return []prometheus.Collector{s.units} }

// Inner returns the Redis store.
func (s *ReservingStore) Inner() *RedisStore { return s.inner }

// Close gives every unused unit back and closes the Redis store.
func (s *ReservingStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.sweep(s.opts.Clock.Now().UnixMicro(), true)
	return s.inner.Close()
}

func (s *ReservingStore) sweeper() {
	defer close(s.done)
	t := time.NewTicker(max(s.opts.Hold/2, 10*time.Millisecond))
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
	var back []keyUnits
	s.mu.Lock()
	for key, l := range s.leases {
		switch {
		case now >= l.windowEnd:
			delete(s.leases, key) // the counter is gone with its window
		case l.inflight > 0:
		case all || (now >= l.expires && l.avail > 0):
			back = append(back, keyUnits{key, int64(l.avail)})
			l.count -= min(l.avail, l.count)
			l.avail = 0
			if all {
				delete(s.leases, key)
			}
		case now-l.touched >= 2*s.hold && l.avail == 0:
			delete(s.leases, key)
		}
	}
	s.mu.Unlock()
	s.giveBack(back)
}

// giveBack returns unused units to their counters. Units that could not be given back
// (Redis unreachable) stay held by their lease, when it is still there, for the next sweep.
func (s *ReservingStore) giveBack(back []keyUnits) {
	if len(back) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.inner.opts.Timeout)
	defer cancel()
	failed := s.inner.returnUnits(ctx, back)
	n := int64(0)
	for _, u := range back {
		n += u.n
	}
	for _, u := range failed {
		n -= u.n
	}
	s.returned.Add(float64(n))
	if len(failed) == 0 {
		return
	}
	s.mu.Lock()
	for _, u := range failed {
		if l := s.leases[u.key]; l != nil {
			l.avail += uint64(u.n)
			l.count += uint64(u.n)
		}
	}
	s.mu.Unlock()
}

// taking is a fixed-window check of a group sent to Redis with units held here.
type taking struct {
	fi, ci int    // forwarded group and check
	l      *lease //
	taken  uint64 // units of the check's cost taken from l.avail (Redis is asked for the rest)
	asked  bool   // this visit asks for extra units (l.pending)
	single bool   // the group is this one check
}

// leaseFor returns the lease of c's counter, creating it when create is set; nil when there
// is none or it is busy with another window or limit. A lease of another window or limit
// is dropped (the units it holds go back, unless their counter ended with its window).
func (s *ReservingStore) leaseFor(c *Check, create bool, back *[]keyUnits) *lease {
	l := s.leases[c.Key]
	if l != nil && (l.windowEnd != c.WindowEnd || l.limit != c.Limit) {
		if l.inflight > 0 {
			return nil
		}
		if l.windowEnd == c.WindowEnd && l.avail > 0 {
			*back = append(*back, keyUnits{c.Key, int64(l.avail)})
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

// Eval admits what the units held cover and sends the rest to Redis, asking for units where
// a counter is busy. A check sent to Redis uses the units held first and charges only the
// rest, so one instance's answers are those of the Redis store.
func (s *ReservingStore) Eval(ctx context.Context, now int64, groups [][]Check) ([][]Result, error) {
	out := make([][]Result, len(groups))
	var fwd [][]Check
	var fwdIdx []int // groups index of each forwarded group
	var takings []taking
	var local []taking // admitted here (fi = groups index); given back if the store fails
	var back []keyUnits
	s.mu.Lock()
	for gi, g := range groups {
		single := len(g) == 1 && g[0].Alg == AlgFixedWindow && g[0].Cost > 0 && now < g[0].WindowEnd
		if single {
			c := &g[0]
			if l := s.leaseFor(c, true, &back); l != nil && l.avail >= c.Cost {
				l.avail -= c.Cost
				l.used += c.Cost
				l.touched = now
				out[gi] = []Result{{Allowed: true, Remaining: c.Limit - min(l.count-l.avail, c.Limit), Reset: c.WindowEnd - now}}
				local = append(local, taking{fi: gi, l: l, taken: c.Cost})
				continue
			}
		}
		fi := len(fwd)
		fg, copied := g, false
		for ci := range g {
			c := &g[ci]
			if c.Alg != AlgFixedWindow || now >= c.WindowEnd {
				continue
			}
			l := s.leaseFor(c, false, &back)
			if l == nil {
				continue
			}
			t := taking{fi: fi, ci: ci, l: l, taken: min(l.avail, c.Cost), single: single}
			var reserve uint64
			if single && !l.pending {
				reserve = min(s.size(l, now), (c.Limit-min(l.count, c.Limit))/16)
				t.asked = reserve > 0
			}
			if t.taken > 0 || t.asked {
				if !copied {
					fg, copied = append([]Check(nil), g...), true
				}
				fg[ci].Cost -= t.taken
				fg[ci].Reserve = reserve
			}
			l.avail -= t.taken
			l.inflight++
			l.pending = l.pending || t.asked
			takings = append(takings, t)
		}
		fwd = append(fwd, fg)
		fwdIdx = append(fwdIdx, gi)
	}
	s.mu.Unlock()
	s.giveBack(back)
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
	defer s.mu.Unlock()
	if err != nil {
		// The fail mode applies to the whole request: the units taken here stay unused.
		for _, t := range local {
			t.l.avail += t.taken
		}
		for _, t := range takings {
			t.l.avail += t.taken
			t.l.inflight--
			if t.asked {
				t.l.pending = false
			}
		}
		return nil, err
	}
	for fi, gi := range fwdIdx {
		out[gi] = res[fi]
	}
	s.used.Add(float64(nlocal))
	for _, t := range takings {
		rs := res[t.fi]
		admitted := true
		for i := range rs {
			admitted = admitted && rs[i].Allowed
		}
		l, r, limit := t.l, &rs[t.ci], fwd[t.fi][t.ci].Limit
		l.inflight--
		if t.asked {
			l.pending = false
		}
		if !admitted {
			l.avail += t.taken // not used: still held
		}
		// The counter in Redis, held units included (the charge of this request and the units
		// reserved with it, when admitted).
		l.count = max(l.count, limit-min(r.Remaining, limit))
		if t.single && admitted && (t.asked || l.visit == 0) {
			// The rate is measured from here: units reserved now, used from now on.
			l.visit, l.grant, l.used = now, r.Reserved, 0
		}
		if admitted {
			l.used += fwd[t.fi][t.ci].Cost + t.taken
			l.touched = now
		}
		if r.Reserved > 0 {
			s.reserved.Add(float64(r.Reserved))
			l.avail += r.Reserved
			l.expires = now + s.hold
			r.Reserved = 0
		}
		r.Remaining = min(r.Remaining+l.avail, limit)
		if t.single && !admitted {
			// Denied by the counter while units reserved by another request of this instance
			// came in: use them (a denial here means no unit is held).
			if c := &groups[fwdIdx[t.fi]][0]; l.avail >= c.Cost {
				l.avail -= c.Cost
				l.used += c.Cost
				s.used.Add(float64(c.Cost))
				*r = Result{Allowed: true, Remaining: limit - min(l.count-l.avail, limit), Reset: c.WindowEnd - now}
			}
		}
	}
	return out, nil
}
