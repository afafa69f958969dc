// Package ratelimit is the gateway's rate-limit service: Envoy's
// envoy.service.ratelimit.v3.RateLimitService over limiter algorithms (fixed window, bucketed
// sliding window, token bucket, leaky bucket/GCRA, calendar quotas) over a Store: in-process
// memory or Redis (single, Sentinel or Cluster) with one atomic script per request group and
// automatic pipelining.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/api-gateway/api-gateway/ir"
)

// Options configure a Service. Zero values take the defaults.
type Options struct {
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // default: a private registry
	Store      Store                 // default: NewMemoryStore()
	Clock      Clock                 // default: SystemClock()
	// KeyPrefix prefixes every counter key (default "agw:rl:").
	KeyPrefix string
	// DisableLocalCache turns off the local cache of over-limit answers.
	DisableLocalCache bool
}

// Service answers ShouldRateLimit from the current Rules.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer
	log     *slog.Logger
	store   Store
	clock   Clock
	prefix  string
	rules   atomic.Pointer[Rules]
	metrics *metrics
	cache   *overCache
	// holder: the store can admit some counters before a denial's retry-after (see
	// earlyAdmitter): a cached denial is not used for them, and is used for at most denyTTL.
	holder  earlyAdmitter
	denyTTL int64
	obsOK   prometheus.Observer
	obsErr  prometheus.Observer
	// timed: observe store latency (the memory store answers in nanoseconds; it is not timed).
	timed bool
	// lastWarn rate-limits the store-down log line to one a second.
	lastWarn atomic.Int64
}

// New returns a Service with empty rules (every descriptor is allowed until SetRules).
func New(opts Options) (*Service, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Store == nil {
		opts.Store = NewMemoryStore()
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock()
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "agw:rl:"
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	if sc, ok := opts.Store.(interface{ Collectors() []prometheus.Collector }); ok && opts.Registerer != nil {
		for _, c := range sc.Collectors() {
			if err := opts.Registerer.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
				return nil, err
			}
		}
	}
	s := &Service{log: opts.Logger, store: opts.Store, clock: opts.Clock, prefix: opts.KeyPrefix, metrics: m,
		obsOK: m.storeDur.WithLabelValues(opts.Store.Name(), "ok"), obsErr: m.storeDur.WithLabelValues(opts.Store.Name(), "error")}
	_, isMemory := opts.Store.(*MemoryStore)
	s.timed = !isMemory
	if !opts.DisableLocalCache {
		s.cache = newOverCache()
	}
	if h, ok := opts.Store.(earlyAdmitter); ok {
		s.holder, s.denyTTL = h, h.denialTTL()
	}
	s.rules.Store(&Rules{domains: map[string]*rnode{}})
	return s, nil
}

// Register adds the RateLimitService to a gRPC server.
func (s *Service) Register(g *grpc.Server) { rlsv3.RegisterRateLimitServiceServer(g, s) }

// SetRules swaps the rules in atomically (nil is ignored).
func (s *Service) SetRules(r *Rules) {
	if r != nil {
		s.rules.Store(r)
	}
}

// Rules returns the rules in force.
func (s *Service) Rules() *Rules { return s.rules.Load() }

// Store returns the counter store.
func (s *Service) Store() Store { return s.store }

// Close closes the store.
func (s *Service) Close() error { return s.store.Close() }

// descState is one request descriptor on its way through ShouldRateLimit.
type descState struct {
	lim      *limitDef
	shared   []string
	cost     uint64
	group    int // index into groups, -1 when not sent to the store
	checks   []Check
	cached   int64 // local cache: denied until (µs), 0 = not cached
	cachedRs int64 // and the counter's reset then (µs)
	cachedAt int   // the rule that is cached
	// never: 1 + the index of a check whose counter can never hold the cost (above its limit
	// or burst): the descriptor is denied without the store (0: none).
	never int
}

// ShouldRateLimit decides one request.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() == "" {
		return nil, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	}
	if len(req.GetDescriptors()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	}
	// The same check translation runs on every route's rate limits (ir.CheckRouteRateLimits):
	// a route is served only if its requests pass here.
	if e := ir.CheckRateLimitShape(len(req.Descriptors), func(i int) int { return len(req.Descriptors[i].GetEntries()) }); e != nil {
		return nil, status.Error(codes.InvalidArgument, "rate limit request: "+e.Error())
	}
	rules := s.rules.Load()
	nowT := s.clock.Now()
	now := nowT.UnixMicro()
	var stackStates [4]descState
	states := stackStates[:0]
	if len(req.Descriptors) > len(stackStates) {
		states = make([]descState, 0, len(req.Descriptors))
	}
	var replacing map[string]bool
	var stackEntries [8]entryView
	for i, d := range req.Descriptors {
		// Every other cap is checked here, before anything is counted: a refused request
		// changes no counter.
		st := descState{group: -1}
		st.cost = 1
		if req.HitsAddend > 0 {
			st.cost = uint64(req.HitsAddend)
		}
		if h := d.GetHitsAddend(); h != nil {
			// A cost above maxRequests never fits a rule (limits and bursts are at most
			// maxRequests): counted as maxRequests+1, it is denied without store work, and
			// the stores' numbers stay below 2^53. Never refused: Envoy fails open on an
			// error, so a refusal would admit the costliest requests uncounted.
			st.cost = min(h.GetValue(), maxRequests+1)
		}
		entries := stackEntries[:0]
		for _, e := range d.GetEntries() {
			entries = append(entries, entryView{key: e.GetKey(), value: e.GetValue()})
		}
		if ov := d.GetLimit(); ov != nil {
			var err error
			if st.lim, err = overrideLimit(rules, req.Domain, entries, ov); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "rate limit descriptor %d: %v", i, err)
			}
		} else {
			st.lim, st.shared = rules.lookup(req.Domain, entries)
		}
		if d.GetIsNegativeHits() {
			st.cost = 0
		}
		if st.lim != nil && len(st.lim.replaces) > 0 {
			if replacing == nil {
				replacing = map[string]bool{}
			}
			for _, r := range st.lim.replaces {
				replacing[r] = true
			}
		}
		states = append(states, st)
	}
	nchecks := 0
	for i := range states {
		st := &states[i]
		if st.lim != nil && st.lim.name != "" && replacing[st.lim.name] {
			st.lim = nil
		}
		if st.lim != nil && !st.lim.unlimited {
			nchecks += len(st.lim.rules)
		}
	}
	// The checks of every descriptor share one array, and the groups another; a request of
	// one check (the common one) gets both in one allocation.
	var groups [][]Check
	var slab []Check
	if nchecks == 1 {
		a := &struct {
			groups [1][]Check
			checks [1]Check
		}{}
		groups, slab = a.groups[:0], a.checks[:]
	} else if nchecks > 1 {
		groups, slab = make([][]Check, 0, len(states)), make([]Check, nchecks)
	}
	for i := range states {
		st := &states[i]
		if st.lim == nil || st.lim.unlimited {
			continue
		}
		n := len(st.lim.rules)
		st.checks, slab = s.buildChecks(req.Domain, req.Descriptors[i].GetEntries(), st, nowT, now, slab[:n:n]), slab[n:]
		if st.cost > 0 {
			for ci := range st.checks {
				if neverFits(&st.checks[ci], st.cost) {
					st.never = ci + 1
					break
				}
			}
			if st.never != 0 {
				continue // denied whatever the counter holds: no store work
			}
		}
		if s.cache != nil {
			for ci := range st.checks {
				if e, ok := s.cache.denied(&st.checks[ci], st.cost, now); ok && (s.holder == nil || !s.holder.holds(st.checks[ci].Key)) {
					st.cached, st.cachedRs, st.cachedAt = e.until, e.reset, ci
					break
				}
			}
			if st.cached != 0 {
				continue
			}
		}
		st.group = len(groups)
		groups = append(groups, st.checks)
	}
	var results [][]Result
	var storeErr error
	if len(groups) > 0 && s.timed {
		t0 := time.Now()
		results, storeErr = s.store.Eval(ctx, now, groups)
		if storeErr != nil {
			s.obsErr.Observe(time.Since(t0).Seconds())
			if last := s.lastWarn.Load(); t0.UnixNano()-last > int64(time.Second) && s.lastWarn.CompareAndSwap(last, t0.UnixNano()) {
				s.log.Warn("rate-limit store unavailable; applying fail modes", "store", s.store.Name(), "error", storeErr)
			}
		} else {
			s.obsOK.Observe(time.Since(t0).Seconds())
		}
	} else if len(groups) > 0 {
		results, storeErr = s.store.Eval(ctx, now, groups)
	}
	return s.respond(req, states, results, storeErr, now), nil
}

// cacheable reports whether a denial of cost by ch can be answered from the over-limit
// cache: always for a fixed window (denied until the window ends, whatever the cost); for
// the others only a cost they can ever hold (above it, the store's retry-after stops
// shrinking once the counter is full, and a cached one would count down).
func cacheable(ch *Check, cost uint64) bool {
	switch ch.Alg {
	case AlgFixedWindow:
		return true
	case AlgTokenBucket, AlgLeakyBucket:
		return cost <= ch.Burst
	default:
		return cost <= ch.Limit
	}
}

// buildChecks fills checks (one per rule of the descriptor's limit) and returns it.
func (s *Service) buildChecks(domain string, entries []*rlcommon.RateLimitDescriptor_Entry, st *descState, nowT time.Time, now int64, checks []Check) []Check {
	n := len(s.prefix) + len(domain) + 4
	for _, e := range entries {
		n += len(e.GetKey()) + len(e.GetValue()) + 2
	}
	var stack [256]byte
	id := stack[:0]
	if n+32 > len(stack) {
		id = make([]byte, 0, n+32)
	}
	id = append(id, s.prefix...)
	id = append(id, '{')
	id = append(id, domain...)
	for i, e := range entries {
		id = append(id, 0x1f)
		id = append(id, e.GetKey()...)
		id = append(id, 0x1e)
		if st.shared != nil && st.shared[i] != "" {
			id = append(id, st.shared[i]...)
		} else {
			id = append(id, e.GetValue()...)
		}
	}
	if tag := len(s.prefix) + 1; len(id)-tag > maxKeyTag {
		// A long descriptor (a 60 KB header value, a 4 MB request) would be stored whole in
		// every counter key it names, for as long as the counter lives: it is named by its
		// SHA-256 instead, so a key stays under maxKeyTag+len(prefix)+suffix bytes. 0x1d
		// starts no configured domain, so a digest never meets a key kept whole.
		sum := sha256.Sum256(id[tag:])
		id = append(id[:tag], 0x1d)
		id = hex.AppendEncode(id, sum[:])
	}
	id = append(id, '}')
	base := len(id)
	for i := range st.lim.rules {
		r := &st.lim.rules[i]
		id = append(id[:base], r.suffix...)
		c := Check{Alg: r.alg, Limit: r.requests, Period: r.period, Burst: r.burst, Cost: st.cost}
		if r.alg == AlgFixedWindow {
			var start int64
			start, c.WindowEnd = fixedWindow(r, nowT, now)
			id = append(id, ':')
			id = strconv.AppendInt(id, start, 36)
		}
		c.Key = string(id)
		checks[i] = c
	}
	return checks
}

// fixedWindow returns the window [start, end) holding now: aligned on the Unix epoch as
// envoyproxy/ratelimit aligns them, or on UTC calendar days and months.
func fixedWindow(r *ruleDef, nowT time.Time, now int64) (int64, int64) {
	switch r.calendar {
	case ir.CalendarDay:
		t := nowT.UTC()
		start := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return start.UnixMicro(), start.AddDate(0, 0, 1).UnixMicro()
	case ir.CalendarMonth:
		t := nowT.UTC()
		start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start.UnixMicro(), start.AddDate(0, 1, 0).UnixMicro()
	}
	start := now - now%r.period
	if now < 0 && now%r.period != 0 {
		start -= r.period
	}
	return start, start + r.period
}

// oneResponse is the response to a request of one descriptor, in one allocation.
type oneResponse struct {
	resp rlsv3.RateLimitResponse
	st   [1]*rlsv3.RateLimitResponse_DescriptorStatus
	ds   [1]rlsv3.RateLimitResponse_DescriptorStatus
	dur  [1]durationpb.Duration
}

// newResponse returns an OK response with room for n statuses (their messages and their
// durations allocated together, not one by one).
func newResponse(n int) (*rlsv3.RateLimitResponse, []rlsv3.RateLimitResponse_DescriptorStatus, []durationpb.Duration) {
	if n == 1 {
		o := &oneResponse{}
		o.resp.Statuses = o.st[:]
		return &o.resp, o.ds[:], o.dur[:]
	}
	resp := &rlsv3.RateLimitResponse{Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, n)}
	return resp, make([]rlsv3.RateLimitResponse_DescriptorStatus, n), make([]durationpb.Duration, n)
}

func (s *Service) respond(req *rlsv3.RateLimitRequest, states []descState, results [][]Result, storeErr error, now int64) *rlsv3.RateLimitResponse {
	resp, dss, durs := newResponse(len(states))
	resp.OverallCode = rlsv3.RateLimitResponse_OK
	var best headerInfo
	bestOver := false
	for i := range states {
		st := &states[i]
		ds := &dss[i]
		resp.Statuses[i] = ds
		if st.lim == nil {
			ds.Code = rlsv3.RateLimitResponse_OK
			continue
		}
		lm := s.limitMetrics(st.lim)
		if st.lim.unlimited {
			lm.c[rUnlimited].Inc()
			ds.Code, ds.LimitRemaining = rlsv3.RateLimitResponse_OK, math.MaxUint32
			continue
		}
		var hi headerInfo
		hi.lim = st.lim
		switch {
		case st.never != 0:
			hi.rule = &st.lim.rules[st.never-1]
			hi.denied = true
			hi.reset = neverSpan(&st.checks[st.never-1], now)
			hi.retryAfter = hi.reset
		case st.cached != 0:
			hi.rule = &st.lim.rules[st.cachedAt]
			hi.denied, hi.reset, hi.retryAfter = true, max(st.cachedRs-now, 0), st.cached-now
		case storeErr != nil || results[st.group] == nil:
			hi.rule = &st.lim.rules[0]
			ds.CurrentLimit = hi.rule.current
			if st.lim.failClosed {
				ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
				resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
				lm.c[rFailClosed].Inc()
			} else {
				lm.c[rFailOpen].Inc()
				lm.fo.Inc()
			}
			continue
		default:
			res := results[st.group]
			pick := -1
			for j := range res {
				if !res[j].Allowed {
					pick = j
					hi.denied = true
					break
				}
				if pick < 0 || res[j].Remaining < res[pick].Remaining {
					pick = j
				}
			}
			hi.rule = &st.lim.rules[pick]
			hi.reset, hi.retryAfter = res[pick].Reset, res[pick].RetryAfter
			if !hi.denied {
				hi.remaining = res[pick].Remaining
			} else if ch := &st.checks[pick]; s.cache != nil && st.cost > 0 && hi.retryAfter > 0 && cacheable(ch, st.cost) {
				until := now + hi.retryAfter
				valid := until
				if s.denyTTL > 0 && ch.Alg == AlgFixedWindow {
					valid = min(until, now+s.denyTTL) // units held elsewhere come back
				}
				s.cache.put(ch, st.cost, until, now+hi.reset, valid, now)
			}
		}
		ds.CurrentLimit = hi.rule.current
		ds.LimitRemaining = uint32(min(hi.remaining, math.MaxUint32))
		if hi.reset > 0 {
			d := time.Duration(hi.reset) * time.Microsecond
			durs[i].Seconds, durs[i].Nanos = int64(d/time.Second), int32(d%time.Second)
			ds.DurationUntilReset = &durs[i]
		}
		switch {
		case !hi.denied:
			ds.Code = rlsv3.RateLimitResponse_OK
			lm.c[rOK].Inc()
		case st.lim.shadow || st.lim.quotaMode:
			ds.Code = rlsv3.RateLimitResponse_OK
			lm.c[rShadow].Inc()
		default:
			ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			if st.cached == 0 {
				lm.c[rOver].Inc()
			} else {
				lm.c[rCached].Inc()
			}
		}
		if st.lim.headers.Any() {
			over := ds.Code == rlsv3.RateLimitResponse_OVER_LIMIT
			switch {
			case best.lim == nil, over && !bestOver, !bestOver && !over && hi.remaining < best.remaining:
				best, bestOver = hi, over
			}
		}
	}
	if best.lim != nil {
		resp.ResponseHeadersToAdd = responseHeaders(&best, resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT)
	}
	return resp
}

// limitMetrics returns the counters of a limit. Their labels come from the configuration
// only (see compileLimit and overrideLimit), so requests cannot add series.
func (s *Service) limitMetrics(lim *limitDef) *limitMetrics { return s.metrics.forLimit(lim) }

// overrideLimit builds the limit a request carries itself (descriptor.limit): a fixed window.
// Its metric labels are those of the limit the configuration has for the same descriptor, or
// "unknown" (metricUnknown) for what the configuration does not name: the request's numbers,
// keys and domain never become label values.
func overrideLimit(rules *Rules, domain string, entries []entryView, ov *rlcommon.RateLimitDescriptor_RateLimitOverride) (*limitDef, error) {
	unit := overrideUnits[ov.GetUnit()]
	if unit == 0 {
		return nil, nil
	}
	if m := ov.GetUnitMultiplier(); m != nil && m.GetValue() > 1 {
		if time.Duration(m.GetValue()) > maxSpan/unit {
			return nil, fmt.Errorf("limit override of %d × %v is longer than %v", m.GetValue(), unit, maxSpan)
		}
		unit *= time.Duration(m.GetValue())
	}
	lim := &limitDef{domain: metricUnknown, label: metricUnknown, algLabel: string(ir.FixedWindow)}
	if cfg, _ := rules.lookup(domain, entries); cfg != nil {
		lim.domain, lim.label = cfg.domain, cfg.label
	} else if _, ok := rules.domains[domain]; ok {
		lim.domain = domain
	}
	rule := ir.RateLimitRule{Kind: "limit", Algorithm: ir.FixedWindow, Requests: uint64(ov.GetRequestsPerUnit()), Period: unit}
	lim.rules = []ruleDef{compileRule("", rule)}
	return lim, nil
}

// overrideUnits are the lengths of a limit override's units (envoy.type.v3.RateLimitUnit).
var overrideUnits = map[typev3.RateLimitUnit]time.Duration{
	typev3.RateLimitUnit_SECOND: time.Second, typev3.RateLimitUnit_MINUTE: time.Minute, typev3.RateLimitUnit_HOUR: time.Hour,
	typev3.RateLimitUnit_DAY: 24 * time.Hour, typev3.RateLimitUnit_MONTH: 30 * 24 * time.Hour,
	typev3.RateLimitUnit_YEAR: 365 * 24 * time.Hour, 7: 7 * 24 * time.Hour, // WEEK, newer than this proto package
}
