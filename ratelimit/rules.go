package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// Rules are the compiled, immutable descriptor trees of every domain. The service swaps a
// whole Rules value in at once (SetRules); requests read it without locks.
type Rules struct {
	Revision uint64
	domains  map[string]*rnode
}

type rnode struct {
	children  map[descKey]*rnode // by key and value ("" for a descriptor without a value)
	wildcards []rwild            // children whose value ends in '*', in config order
	lim       *limitDef
	share     bool   // share_threshold: matches of this wildcard share a counter
	pattern   string // the wildcard value ("files*"), for share_threshold
}

// descKey is a descriptor's key and value. envoyproxy/ratelimit joins them ("key_value"), so
// key "a_b" value "c" and key "a" value "b_c" were one node: one descriptor's limit applied
// to the other's requests, and the second was refused as a duplicate.
type descKey struct{ key, value string }

type rwild struct {
	key    string
	prefix string // the value before its '*'
	node   *rnode
}

// limitDef is what applies when a request descriptor ends at a node.
type limitDef struct {
	domain     string
	name       string
	replaces   []string
	unlimited  bool
	shadow     bool
	quotaMode  bool
	detailed   bool
	failClosed bool
	headers    ir.RateLimitHeaders
	rules      []ruleDef
	label      string // metric descriptor label: the keys of the path
	algLabel   string
	source     string
	metrics    atomic.Pointer[limitMetrics]
}

type ruleDef struct {
	kind     string
	alg      Algorithm
	requests uint64
	period   int64 // µs: window length, or T1 for buckets
	calendar ir.RateLimitCalendar
	burst    uint64
	suffix   string // key suffix naming algorithm and period
	window   int64  // seconds, for RateLimit-Policy w=
	current  *rlsv3.RateLimitResponse_RateLimit
}

// BuildRules compiles the rate-limit rules of a whole model: the generated "api-gateway"
// domain and every domain config (translate.RateLimitDomains). It is pure. The returned
// Rules is never nil and holds everything that compiled; err lists the objects that did not
// (each reported and left out, never breaking the rest).
func BuildRules(snap *model.Snapshot) (*Rules, error) {
	domains, errs := translate.RateLimitDomains(snap)
	var rev uint64
	if snap != nil {
		rev = snap.Revision
	}
	r, err := BuildRulesFromDomains(rev, domains)
	if err != nil {
		errs = append(errs, err)
	}
	if snap != nil {
		// Envoy sends one descriptor per policy applied to a route (its own and the global
		// ones), and the service refuses a request of more than MaxDescriptors, on which Envoy
		// fails open: such a route would not be limited at all. Say so.
		for _, route := range snap.Routes {
			if n := len(translate.RouteRateLimits(route, snap)); n > MaxDescriptors {
				errs = append(errs, fmt.Errorf("routes/%s: %d rate limits apply (its policies and limits, and the global ones); the rate-limit service accepts at most %d per request and fails open beyond: none of them limits this route", route.ID, n, MaxDescriptors))
			}
		}
	}
	return r, errors.Join(errs...)
}

// BuildRulesFromIR compiles the rate-limit part of a revision's IR (the pipeline translates
// the model once for every consumer): its domains, and the problems translation found. A
// route whose rate limits go past the service's caps is not in the IR: translation leaves it
// out (ir.Route.Validate), so Envoy does not serve it rather than serve it unlimited.
func BuildRulesFromIR(cfg *ir.Config) (*Rules, error) {
	var errs []error
	for _, p := range cfg.RateLimit.Problems {
		errs = append(errs, errors.New(p))
	}
	r, derrs := buildDomains(cfg.Revision, cfg.RateLimit.Domains)
	return r, errors.Join(append(errs, derrs...)...)
}

// BuildRulesFromDomains compiles IR domains.
func BuildRulesFromDomains(revision uint64, domains []ir.RateLimitDomain) (*Rules, error) {
	r, errs := buildDomains(revision, domains)
	return r, errors.Join(errs...)
}

// buildDomains is BuildRulesFromDomains with one error per descriptor left out.
func buildDomains(revision uint64, domains []ir.RateLimitDomain) (*Rules, []error) {
	r := &Rules{Revision: revision, domains: map[string]*rnode{}}
	var errs []error
	for _, d := range domains {
		if d.Name == "" {
			errs = append(errs, fmt.Errorf("rate-limit domain with an empty name"))
			continue
		}
		root := r.domains[d.Name]
		if root == nil {
			root = &rnode{children: map[descKey]*rnode{}}
			r.domains[d.Name] = root
		}
		compileNodes(root, d.Name, nil, nil, d.Descriptors, &errs)
	}
	return r, errs
}

// Domains lists the configured domain names.
func (r *Rules) Domains() []string {
	out := make([]string, 0, len(r.domains))
	for d := range r.domains {
		out = append(out, d)
	}
	return out
}

// compileNodes compiles descriptors under parent; path holds the keys that lead there, vpath
// the same nodes as configured ("key_value", or "key" for any value).
func compileNodes(parent *rnode, domain string, path, vpath []string, ds []ir.RateLimitDescriptor, errs *[]error) {
	for _, d := range ds {
		if d.Key == "" {
			*errs = append(*errs, fmt.Errorf("%s: domain %s: descriptor with an empty key", d.Source, domain))
			continue
		}
		fk := d.Key
		if d.Value != "" {
			fk += "_" + d.Value
		}
		dk := descKey{d.Key, d.Value}
		if _, dup := parent.children[dk]; dup {
			*errs = append(*errs, fmt.Errorf("%s: domain %s: duplicate descriptor %s", d.Source, domain,
				strings.Join(append(append([]string(nil), path...), fk), ".")))
			continue
		}
		if len(path) >= MaxDescriptorEntries {
			// A request descriptor has at most MaxDescriptorEntries entries: nothing deeper
			// can ever match.
			*errs = append(*errs, fmt.Errorf("%s: domain %s: descriptor %s is nested %d deep; a request descriptor carries at most %d entries, so it can never match", d.Source, domain,
				strings.Join(append(append([]string(nil), path...), fk), "."), len(path)+1, MaxDescriptorEntries))
			continue
		}
		n := &rnode{children: map[descKey]*rnode{}}
		p := append(append([]string(nil), path...), d.Key)
		vp := append(append([]string(nil), vpath...), fk)
		if len(d.Limits) > 0 || d.Unlimited || d.Replaces != nil || d.Name != "" {
			lim, err := compileLimit(domain, p, vp, d)
			if err != nil {
				*errs = append(*errs, err)
				continue
			}
			n.lim = lim
		}
		if strings.HasSuffix(d.Value, "*") {
			parent.wildcards = append(parent.wildcards, rwild{key: d.Key, prefix: strings.TrimSuffix(d.Value, "*"), node: n})
			n.share, n.pattern = d.ShareThreshold, d.Value
		}
		compileNodes(n, domain, p, vp, d.Descriptors, errs)
		parent.children[dk] = n
	}
}

// compileLimit compiles the limit of the node at path (keys) / vpath (configured key_value).
// Its metric labels come from the configuration alone: the descriptor label is the keys of
// the path, or with detailed_metric / value_to_metric the configured values too ("key_value",
// a wildcard as written, "key" where any value matches), never a request's values (envoyproxy/
// ratelimit puts those in its stats names; here they would make one series per client).
func compileLimit(domain string, path, vpath []string, d ir.RateLimitDescriptor) (*limitDef, error) {
	lim := &limitDef{
		domain: domain, name: d.Name, replaces: d.Replaces, unlimited: d.Unlimited, shadow: d.ShadowMode,
		quotaMode: d.QuotaMode, detailed: d.DetailedMetric || d.ValueToMetric, failClosed: d.FailMode == "closed",
		headers: d.Headers, label: strings.Join(path, "."), source: d.Source,
	}
	if lim.detailed {
		lim.label = strings.Join(vpath, ".")
	}
	if d.Unlimited {
		lim.algLabel = "unlimited"
		return lim, nil
	}
	if len(d.Limits) == 0 {
		return nil, fmt.Errorf("%s: domain %s: descriptor %s has no limit", d.Source, domain, lim.label)
	}
	for _, rule := range d.Limits {
		if err := rule.Validate(); err != nil {
			return nil, fmt.Errorf("%s: domain %s: descriptor %s: %w", d.Source, domain, lim.label, err)
		}
		if err := ruleInBounds(rule); err != nil {
			return nil, fmt.Errorf("%s: domain %s: descriptor %s: %w", d.Source, domain, lim.label, err)
		}
		lim.rules = append(lim.rules, compileRule(d.Name, rule))
	}
	lim.algLabel = string(d.Limits[0].Algorithm)
	return lim, nil
}

func compileRule(name string, r ir.RateLimitRule) ruleDef {
	rd := ruleDef{kind: r.Kind, requests: r.Requests, calendar: r.Calendar, burst: r.Burst}
	period := r.Period.Microseconds()
	switch {
	case r.Calendar != ir.CalendarNone:
		rd.alg = AlgFixedWindow
		rd.suffix = ":q" + string(r.Calendar[0])
	case r.Requests == 0:
		// Zero requests admits nothing: a fixed window of limit 0.
		rd.alg, rd.period = AlgFixedWindow, period
		rd.suffix = ":f" + strconv.FormatInt(period, 36)
	default:
		switch r.Algorithm {
		case ir.FixedWindow:
			rd.alg, rd.period = AlgFixedWindow, period
		case ir.SlidingWindow:
			rd.alg, rd.period = AlgSlidingWindow, period
		case ir.TokenBucket, ir.LeakyBucket:
			rd.alg = AlgTokenBucket
			if r.Algorithm == ir.LeakyBucket {
				rd.alg = AlgLeakyBucket
			}
			rd.period = ceilDiv(period, int64(r.Requests)) // T1
			if rd.burst == 0 {
				rd.burst = r.Requests
				if rd.alg == AlgLeakyBucket {
					rd.burst = 1
				}
			}
		}
		rd.suffix = ":" + string(rune(rd.alg)) + strconv.FormatInt(period, 36)
		if rd.alg == AlgSlidingWindow {
			// ":w", not ":s": the exact log's keys (sorted sets) must not meet the buckets'
			// (strings) while replicas of both versions run.
			rd.suffix = ":w" + strconv.FormatInt(period, 36)
		}
		if rd.alg == AlgTokenBucket || rd.alg == AlgLeakyBucket {
			rd.suffix += "." + strconv.FormatUint(r.Requests, 36)
		}
	}
	rd.window = int64(math.Ceil(r.Period.Seconds()))
	rd.current = currentLimit(name, r)
	return rd
}

// ruleInBounds checks a rule against maxRequests and maxSpan (see limits.go).
func ruleInBounds(r ir.RateLimitRule) error {
	_, err := ruleBounds(r)
	return err
}

// ruleBounds is ruleInBounds naming what is out of bounds: "requests", "burst" or "period".
func ruleBounds(r ir.RateLimitRule) (string, error) {
	if r.Requests > maxRequests {
		return "requests", fmt.Errorf("requests may be at most %d", uint64(maxRequests))
	}
	if r.Burst > maxRequests {
		return "burst", fmt.Errorf("burst may be at most %d", uint64(maxRequests))
	}
	if r.Calendar != ir.CalendarNone {
		return "", nil
	}
	if r.Period > maxSpan { // a rule of zero requests too: its window end is a number
		return "period", fmt.Errorf("period may be at most %v", maxSpan)
	}
	if r.Requests > 0 && (r.Algorithm == ir.TokenBucket || r.Algorithm == ir.LeakyBucket) {
		rd := compileRule("", r)
		if rd.burst > uint64(maxSpan.Microseconds()/rd.period) {
			return "burst", fmt.Errorf("burst %d takes longer than %v to refill at %d per %v", rd.burst, maxSpan, r.Requests, r.Period)
		}
	}
	return "", nil
}

// currentLimit expresses a rule as an Envoy RateLimit (unit, with a multiplier when the
// period is not one unit).
func currentLimit(name string, r ir.RateLimitRule) *rlsv3.RateLimitResponse_RateLimit {
	out := &rlsv3.RateLimitResponse_RateLimit{Name: name, RequestsPerUnit: uint32(min(r.Requests, math.MaxUint32))}
	switch r.Calendar {
	case ir.CalendarDay:
		out.Unit = rlsv3.RateLimitResponse_RateLimit_DAY
		return out
	case ir.CalendarMonth:
		out.Unit = rlsv3.RateLimitResponse_RateLimit_MONTH
		return out
	}
	units := []struct {
		d time.Duration
		u rlsv3.RateLimitResponse_RateLimit_Unit
	}{
		{365 * 24 * time.Hour, rlsv3.RateLimitResponse_RateLimit_YEAR},
		{30 * 24 * time.Hour, rlsv3.RateLimitResponse_RateLimit_MONTH},
		{7 * 24 * time.Hour, rlsv3.RateLimitResponse_RateLimit_WEEK},
		{24 * time.Hour, rlsv3.RateLimitResponse_RateLimit_DAY},
		{time.Hour, rlsv3.RateLimitResponse_RateLimit_HOUR},
		{time.Minute, rlsv3.RateLimitResponse_RateLimit_MINUTE},
		{time.Second, rlsv3.RateLimitResponse_RateLimit_SECOND},
	}
	for _, u := range units {
		if r.Period == u.d {
			out.Unit = u.u
			return out
		}
	}
	for _, u := range units[3:] {
		if r.Period%u.d == 0 {
			out.Unit = u.u
			out.UnitMultiplier = wrapperspb.UInt32(uint32(r.Period / u.d))
			return out
		}
	}
	return out // sub-second periods: unit unknown
}

// entryView is the part of a request descriptor entry the lookup needs.
type entryView struct{ key, value string }

// lookup finds the limit of a request descriptor with envoyproxy/ratelimit's semantics:
// at each level key and value first, then the first wildcard of the key whose value prefix
// matches, then the key alone; the limit applies only when the descriptor ends at its node.
// shared returns, per entry, the wildcard value to count under when share_threshold applies
// ("" otherwise). Unlike envoyproxy/ratelimit, key and value are matched apart, not joined
// with '_' (descKey).
func (r *Rules) lookup(domain string, entries []entryView) (lim *limitDef, shared []string) {
	level := r.domains[domain]
	if level == nil {
		return nil, nil
	}
	for i, e := range entries {
		next := level.children[descKey{e.key, e.value}]
		if next == nil {
			for _, w := range level.wildcards {
				if w.key == e.key && strings.HasPrefix(e.value, w.prefix) {
					next = w.node
					if next.share {
						if shared == nil {
							shared = make([]string, len(entries))
						}
						shared[i] = next.pattern
					}
					break
				}
			}
		}
		if next == nil {
			next = level.children[descKey{e.key, ""}]
		}
		if next != nil && next.lim != nil && i == len(entries)-1 {
			lim = next.lim
		}
		if next == nil || len(next.children) == 0 {
			break
		}
		level = next
	}
	if lim == nil {
		shared = nil
	}
	return lim, shared
}
