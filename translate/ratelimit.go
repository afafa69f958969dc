package translate

import (
	"fmt"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// GeneratedRateLimitDomain is the rate-limit domain of the limits generated from routes and
// policies (contracts.md).
const GeneratedRateLimitDomain = "api-gateway"

// Descriptor keys of the generated domain.
const (
	RateLimitKeyRoute  = "route_id"
	RateLimitKeyPolicy = "policy"
)

// rlPolicy is one policy applied to a route (or globally), resolved.
type rlPolicy struct {
	id       string
	p        *model.RateLimit
	failMode string
}

// RouteRateLimits returns the Envoy rate-limit actions of a route: one descriptor per policy
// applied to it (route policies, inline limits, then global policies), entries in the order
// of contracts.md. GeneratedDomain builds the matching rules from the same resolution, so the
// two cannot drift. Policies that do not resolve are left out (GeneratedDomain reports them).
func RouteRateLimits(route *model.Route, snap *model.Snapshot) []ir.RateLimit {
	if route == nil || snap == nil || !forwards(route) {
		// A redirect or a direct response: Envoy's rate-limit filter skips a route without
		// a cluster (source/extensions/filters/http/ratelimit/ratelimit.cc initiateCall), so
		// no limit, not even an edge-wide one, counts these requests.
		return nil
	}
	var out []ir.RateLimit
	own, _ := rlRoutePolicies(route, snap)
	for _, pol := range own {
		entries := []ir.RateLimitEntry{
			{Kind: ir.RateLimitGenericKey, DescriptorKey: RateLimitKeyRoute, Value: route.ID},
			{Kind: ir.RateLimitGenericKey, DescriptorKey: RateLimitKeyPolicy, Value: pol.id},
		}
		out = append(out, ir.RateLimit{Entries: append(entries, rlByEntries(pol.p)...)})
	}
	if route.RateLimit == nil || !route.RateLimit.SkipGlobal {
		global, _ := rlGlobalPolicies(snap)
		for _, pol := range global {
			entries := []ir.RateLimitEntry{{Kind: ir.RateLimitGenericKey, DescriptorKey: RateLimitKeyPolicy, Value: pol.id}}
			out = append(out, ir.RateLimit{Entries: append(entries, rlByEntries(pol.p)...)})
		}
	}
	return out
}

// rlByEntries returns the entries after route_id/policy for the policy's `by`.
func rlByEntries(p *model.RateLimit) []ir.RateLimitEntry {
	switch p.EffectiveBy() {
	case "ip":
		return []ir.RateLimitEntry{{Kind: ir.RateLimitRemoteAddress, DescriptorKey: "remote_address"}}
	case "user":
		return []ir.RateLimitEntry{{Kind: ir.RateLimitMetadata, DescriptorKey: "user", MetadataKey: "user_id"}}
	case "api_key":
		return []ir.RateLimitEntry{{Kind: ir.RateLimitMetadata, DescriptorKey: "api_key", MetadataKey: "api_key_id"}}
	case "tenant":
		return []ir.RateLimitEntry{{Kind: ir.RateLimitMetadata, DescriptorKey: "tenant", MetadataKey: "tenant_id"}}
	case "header":
		return []ir.RateLimitEntry{{Kind: ir.RateLimitRequestHeader, DescriptorKey: "header", Header: p.Header}}
	}
	return nil
}

// rlLookup finds a policy-shape rate-limits object by id.
func rlLookup(snap *model.Snapshot, id string) (*model.RateLimit, error) {
	for _, rl := range snap.RateLimits {
		if rl.ID == id {
			if rl.IsDomain() {
				return nil, fmt.Errorf("rate-limits/%s is a domain config, not a policy", id)
			}
			return rl, nil
		}
	}
	return nil, fmt.Errorf("rate-limits/%s does not exist", id)
}

func rlGlobal(snap *model.Snapshot) *model.GlobalRateLimit {
	if snap.Settings == nil || snap.Settings.RateLimit == nil {
		return &model.GlobalRateLimit{}
	}
	return snap.Settings.RateLimit
}

func rlRoutePolicies(route *model.Route, snap *model.Snapshot) ([]rlPolicy, []error) {
	rr := route.RateLimit
	if rr == nil {
		return nil, nil
	}
	var out []rlPolicy
	var errs []error
	seen := map[string]bool{}
	add := func(id string, p *model.RateLimit) {
		if seen[id] {
			errs = append(errs, fmt.Errorf("routes/%s: rate limit %q applied twice", route.ID, id))
			return
		}
		if fe := p.Validate(); len(fe) > 0 {
			errs = append(errs, fmt.Errorf("routes/%s: rate limit %q: %v", route.ID, id, fe))
			return
		}
		seen[id] = true
		out = append(out, rlPolicy{id: id, p: p, failMode: rlFailMode(p.FailMode, rr.FailMode, rlGlobal(snap).FailMode)})
	}
	for _, id := range rr.Policies {
		p, err := rlLookup(snap, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("routes/%s: rate_limit.policies: %w", route.ID, err))
			continue
		}
		add(id, p)
	}
	for i := range rr.Limits {
		if rr.Limits[i].IsDomain() {
			errs = append(errs, fmt.Errorf("routes/%s: rate_limit.limits[%d] is not a policy", route.ID, i))
			continue
		}
		add(rr.InlineID(route.ID, i), &rr.Limits[i])
	}
	return out, errs
}

func rlGlobalPolicies(snap *model.Snapshot) ([]rlPolicy, []error) {
	g := rlGlobal(snap)
	var out []rlPolicy
	var errs []error
	seen := map[string]bool{}
	add := func(id string, p *model.RateLimit) {
		if seen[id] {
			errs = append(errs, fmt.Errorf("settings: rate limit %q applied twice", id))
			return
		}
		if fe := p.Validate(); len(fe) > 0 {
			errs = append(errs, fmt.Errorf("settings: rate limit %q: %v", id, fe))
			return
		}
		seen[id] = true
		out = append(out, rlPolicy{id: id, p: p, failMode: rlFailMode(p.FailMode, g.FailMode)})
	}
	for _, id := range g.Policies {
		p, err := rlLookup(snap, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("settings: rate_limit.policies: %w", err))
			continue
		}
		add(id, p)
	}
	for i := range g.Limits {
		if g.Limits[i].IsDomain() {
			errs = append(errs, fmt.Errorf("settings: rate_limit.limits[%d] is not a policy", i))
			continue
		}
		add(g.InlineID(i), &g.Limits[i])
	}
	return out, errs
}

// rlFailMode returns the first non-empty fail mode, default "open".
func rlFailMode(modes ...string) string {
	for _, m := range modes {
		if m != "" {
			return m
		}
	}
	return "open"
}

// RateLimitHeadersIR turns a headers block into the IR selection (nil: none).
func RateLimitHeadersIR(h *model.RateLimitHeaders) ir.RateLimitHeaders {
	if h == nil {
		return ir.RateLimitHeaders{}
	}
	return ir.RateLimitHeaders{
		Limit: h.On(h.Total), Remaining: h.On(h.Remaining), Reset: h.On(h.Reset),
		RetryAfter: h.On(h.RetryAfter), IETF: h.On(h.IETF),
	}
}

func rlHeaders(own, def *model.RateLimitHeaders) ir.RateLimitHeaders {
	if own != nil {
		return RateLimitHeadersIR(own)
	}
	return RateLimitHeadersIR(def)
}

// PolicyRules returns the counted rules of a policy: its limit, its spike arrest and its
// calendar quotas.
func PolicyRules(p *model.RateLimit) []ir.RateLimitRule {
	var rules []ir.RateLimitRule
	if p.RequestsPerUnit > 0 {
		alg := ir.RateLimitAlgorithm(p.EffectiveAlgorithm())
		rules = append(rules, ir.RateLimitRule{
			Kind: "limit", Algorithm: alg, Requests: p.RequestsPerUnit, Period: p.TimeUnit.D(),
			Burst: rlDefaultBurst(alg, p.RequestsPerUnit, p.BurstCapacity),
		})
	}
	if s := p.SpikeArrest; s != nil {
		burst := s.Burst
		if burst == 0 {
			burst = 1
		}
		rules = append(rules, ir.RateLimitRule{Kind: "spike_arrest", Algorithm: ir.LeakyBucket,
			Requests: s.RatePerSecond, Period: time.Second, Burst: burst})
	}
	if q := p.Quota; q != nil {
		if q.PerDay > 0 {
			rules = append(rules, ir.RateLimitRule{Kind: "quota_day", Algorithm: ir.FixedWindow,
				Requests: q.PerDay, Period: 24 * time.Hour, Calendar: ir.CalendarDay})
		}
		if q.PerMonth > 0 {
			rules = append(rules, ir.RateLimitRule{Kind: "quota_month", Algorithm: ir.FixedWindow,
				Requests: q.PerMonth, Period: 30 * 24 * time.Hour, Calendar: ir.CalendarMonth})
		}
	}
	return rules
}

// rlDefaultBurst: token_bucket holds requests_per_unit by default, leaky_bucket 1.
func rlDefaultBurst(alg ir.RateLimitAlgorithm, requests, burst uint64) uint64 {
	if burst > 0 {
		return burst
	}
	switch alg {
	case ir.TokenBucket:
		return requests
	case ir.LeakyBucket:
		return 1
	}
	return 0
}

// rlPolicyNode returns the node holding a policy's limits under its `by` level.
func rlPolicyNode(pol rlPolicy, source string, headers *model.RateLimitHeaders) ir.RateLimitDescriptor {
	leaf := ir.RateLimitDescriptor{
		Limits: PolicyRules(pol.p), Name: pol.id, ShadowMode: pol.p.ShadowMode, FailMode: pol.failMode,
		Headers: rlHeaders(pol.p.Headers, headers), Source: source,
	}
	by := rlByEntries(pol.p)
	node := ir.RateLimitDescriptor{Key: RateLimitKeyPolicy, Value: pol.id, Source: source}
	if len(by) == 0 {
		leaf.Key, leaf.Value = node.Key, node.Value
		return leaf
	}
	leaf.Key = by[0].DescriptorKey
	node.Descriptors = []ir.RateLimitDescriptor{leaf}
	return node
}

// GeneratedDomain returns the rules of domain "api-gateway" for every route's policies and the
// global policies: route_id=<id> → policy=<pid> → [by key],
// policy=<pid> → [by key].
// Problems (unknown policy ids, invalid inline limits) are reported per route and the rest
// is kept.
func GeneratedDomain(snap *model.Snapshot) (ir.RateLimitDomain, []error) {
	d := ir.RateLimitDomain{Name: GeneratedRateLimitDomain}
	if snap == nil {
		return d, nil
	}
	defHeaders := rlGlobal(snap).Headers
	var errs []error
	for _, route := range snap.Routes {
		pols, perrs := rlRoutePolicies(route, snap)
		errs = append(errs, perrs...)
		if len(pols) == 0 {
			continue
		}
		rn := ir.RateLimitDescriptor{Key: RateLimitKeyRoute, Value: route.ID, Source: "routes/" + route.ID}
		for _, pol := range pols {
			rn.Descriptors = append(rn.Descriptors, rlPolicyNode(pol, "routes/"+route.ID+" rate-limits/"+pol.id, defHeaders))
		}
		d.Descriptors = append(d.Descriptors, rn)
	}
	gpols, gerrs := rlGlobalPolicies(snap)
	errs = append(errs, gerrs...)
	for _, pol := range gpols {
		d.Descriptors = append(d.Descriptors, rlPolicyNode(pol, "settings rate-limits/"+pol.id, defHeaders))
	}
	return d, errs
}

// ConfigDomain translates one envoyproxy/ratelimit-shape rate-limits object. Limits without
// an algorithm are fixed windows aligned on the unit, as envoyproxy/ratelimit counts them.
func ConfigDomain(rl *model.RateLimit, global *model.GlobalRateLimit) (ir.RateLimitDomain, error) {
	if global == nil {
		global = &model.GlobalRateLimit{}
	}
	if fe := rl.Validate(); len(fe) > 0 {
		return ir.RateLimitDomain{}, fmt.Errorf("rate-limits/%s: %v", rl.ID, fe)
	}
	if !rl.IsDomain() {
		return ir.RateLimitDomain{}, fmt.Errorf("rate-limits/%s is a policy, not a domain config", rl.ID)
	}
	src := "rate-limits/" + rl.ID
	return ir.RateLimitDomain{Name: rl.Domain, Descriptors: rlConfigDescriptors(rl.Descriptors, src, global)}, nil
}

func rlConfigDescriptors(ds []model.RateLimitDescriptor, src string, g *model.GlobalRateLimit) []ir.RateLimitDescriptor {
	out := make([]ir.RateLimitDescriptor, 0, len(ds))
	for _, d := range ds {
		n := ir.RateLimitDescriptor{
			Key: d.Key, Value: d.Value, ShadowMode: d.ShadowMode, QuotaMode: d.QuotaMode,
			DetailedMetric: d.DetailedMetric, ValueToMetric: d.ValueToMetric, ShareThreshold: d.ShareThreshold,
			Source: src, FailMode: rlFailMode(g.FailMode), Headers: rlHeaders(nil, g.Headers),
			Descriptors: rlConfigDescriptors(d.Descriptors, src, g),
		}
		if rl := d.RateLimit; rl != nil {
			n.Name = rl.Name
			for _, r := range rl.Replaces {
				n.Replaces = append(n.Replaces, r.Name)
			}
			n.FailMode = rlFailMode(rl.FailMode, g.FailMode)
			n.Headers = rlHeaders(rl.Headers, g.Headers)
			if rl.Unlimited {
				n.Unlimited = true
			} else {
				period := rl.TimeUnit.D()
				if rl.Unit != "" {
					period = model.EnvoyUnits[strings.ToLower(rl.Unit)]
				}
				alg := ir.RateLimitAlgorithm(rl.Algorithm)
				if alg == "" {
					alg = ir.FixedWindow
				}
				n.Limits = []ir.RateLimitRule{{Kind: "limit", Algorithm: alg, Requests: rl.RequestsPerUnit,
					Period: period, Burst: rlDefaultBurst(alg, rl.RequestsPerUnit, rl.BurstCapacity)}}
			}
		}
		out = append(out, n)
	}
	return out
}

// RateLimitDomains returns every domain the rate-limit service serves: the generated
// "api-gateway" domain and the domain configs of the rate-limits collection. Configs of the
// same domain are merged in id order; a descriptor that repeats one already loaded at the
// top level of its domain is reported and left out.
func RateLimitDomains(snap *model.Snapshot) ([]ir.RateLimitDomain, []error) {
	gen, errs := GeneratedDomain(snap)
	domains := []ir.RateLimitDomain{}
	index := map[string]int{}
	merge := func(d ir.RateLimitDomain, src string) {
		i, ok := index[d.Name]
		if !ok {
			index[d.Name] = len(domains)
			domains = append(domains, ir.RateLimitDomain{Name: d.Name})
			i = len(domains) - 1
		}
		// A descriptor is its key and value, not the two joined: "a_b"="c" is not "a"="b_c".
		type kv struct{ key, value string }
		have := map[kv]bool{}
		for _, x := range domains[i].Descriptors {
			have[kv{x.Key, x.Value}] = true
		}
		for _, x := range d.Descriptors {
			if have[kv{x.Key, x.Value}] {
				errs = append(errs, fmt.Errorf("%s: domain %q already has descriptor %s=%s", src, d.Name, x.Key, x.Value))
				continue
			}
			have[kv{x.Key, x.Value}] = true
			domains[i].Descriptors = append(domains[i].Descriptors, x)
		}
	}
	if len(gen.Descriptors) > 0 {
		merge(gen, "generated")
	}
	if snap == nil {
		return domains, errs
	}
	for _, rl := range snap.RateLimits {
		if !rl.IsDomain() {
			continue
		}
		d, err := ConfigDomain(rl, rlGlobal(snap))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		merge(d, "rate-limits/"+rl.ID)
	}
	return domains, errs
}
