package model

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// RateLimit is one object of the rate-limits collection. It has two shapes:
//
//   - A policy (the README shape): strategy/algorithm, requests_per_unit per time_unit,
//     burst_capacity, headers, and who is counted (`by`). Routes apply policies by id
//     (route.rate_limit.policies) or inline (route.rate_limit.limits); settings apply them to
//     every route. The gateway generates the Envoy route actions and the rate-limit service
//     rules for them (domain "api-gateway").
//   - A domain config in envoyproxy/ratelimit's format (domain + nested descriptors), served
//     as written so an existing envoyproxy/ratelimit YAML file loads unchanged. Routes reach
//     it through explicit Envoy rate-limit actions.
//
// An object is one shape or the other: `domain` selects the second.
type RateLimit struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`

	// Strategy is the algorithm: fixed_window, sliding_window, token_bucket (default) or
	// leaky_bucket. Algorithm is an alias; set one of them.
	Strategy  string `json:"strategy,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
	// RequestsPerUnit requests are allowed per TimeUnit (any duration: "1s", "90s", "1h", "7d").
	RequestsPerUnit uint64   `json:"requests_per_unit,omitempty"`
	TimeUnit        Duration `json:"time_unit,omitempty"`
	// BurstCapacity is the bucket size for token_bucket (default requests_per_unit) and the
	// burst tolerance for leaky_bucket (default 1: evenly spaced requests).
	BurstCapacity uint64            `json:"burst_capacity,omitempty"`
	Headers       *RateLimitHeaders `json:"headers,omitempty"`
	// By says who shares a counter: route (everyone on the route, default), ip, user,
	// api_key, tenant, or header (the value of request header Header).
	By     string `json:"by,omitempty"`
	Header string `json:"header,omitempty"`
	// FailMode when the counter store is unreachable: open (allow, counted in a metric) or
	// closed (deny). Empty inherits from the route, then the settings (default open).
	FailMode string `json:"fail_mode,omitempty"`
	// ShadowMode counts and reports but never denies.
	ShadowMode bool `json:"shadow_mode,omitempty"`
	// SpikeArrest smooths traffic to RatePerSecond with a small Burst, on top of the limit.
	SpikeArrest *SpikeArrest `json:"spike_arrest,omitempty"`
	// Quota adds calendar quotas (UTC days and months) for the same `by` key.
	Quota *RateLimitQuota `json:"quota,omitempty"`

	// Domain and Descriptors: the envoyproxy/ratelimit configuration shape.
	Domain      string                `json:"domain,omitempty"`
	Descriptors []RateLimitDescriptor `json:"descriptors,omitempty"`

	Meta
}

// RateLimitHeaders selects the response headers of a limit. With Enable, every header is on
// unless turned off: x-ratelimit-limit (Total), x-ratelimit-remaining (Remaining),
// x-ratelimit-reset (Reset), retry-after on 429 (RetryAfter) and the IETF RateLimit /
// RateLimit-Policy pair (IETF).
type RateLimitHeaders struct {
	Enable     bool  `json:"enable"`
	Remaining  *bool `json:"remaining,omitempty"`
	Reset      *bool `json:"reset,omitempty"`
	Total      *bool `json:"total,omitempty"`
	RetryAfter *bool `json:"retry_after,omitempty"`
	IETF       *bool `json:"ietf,omitempty"`
}

// On reports whether a header toggle is on (nil means on when headers are enabled).
func (h *RateLimitHeaders) On(b *bool) bool {
	return h != nil && h.Enable && (b == nil || *b)
}

// SpikeArrest allows RatePerSecond requests per second, evenly spaced, with Burst extra
// requests tolerated at once (default 1: no burst beyond the rate).
type SpikeArrest struct {
	RatePerSecond uint64 `json:"rate_per_second"`
	Burst         uint64 `json:"burst,omitempty"`
}

// RateLimitQuota caps usage per UTC calendar day and per UTC calendar month, counted by the
// policy's `by` key (user, api_key or tenant are the usual choices).
type RateLimitQuota struct {
	PerDay   uint64 `json:"per_day,omitempty"`
	PerMonth uint64 `json:"per_month,omitempty"`
}

// RateLimitDescriptor is one level of an envoyproxy/ratelimit descriptor tree. Value may end
// in "*" (prefix wildcard); an empty value matches any value of the key.
type RateLimitDescriptor struct {
	Key            string                `json:"key"`
	Value          string                `json:"value,omitempty"`
	RateLimit      *DescriptorRateLimit  `json:"rate_limit,omitempty"`
	ShadowMode     bool                  `json:"shadow_mode,omitempty"`
	QuotaMode      bool                  `json:"quota_mode,omitempty"`
	DetailedMetric bool                  `json:"detailed_metric,omitempty"`
	ValueToMetric  bool                  `json:"value_to_metric,omitempty"`
	ShareThreshold bool                  `json:"share_threshold,omitempty"`
	Descriptors    []RateLimitDescriptor `json:"descriptors,omitempty"`
}

// DescriptorRateLimit is a descriptor's limit in envoyproxy/ratelimit's format (unit +
// requests_per_unit, unlimited, name, replaces) plus our extensions: algorithm, time_unit
// (any duration instead of unit), burst_capacity and headers.
type DescriptorRateLimit struct {
	Unit            string            `json:"unit,omitempty"`
	RequestsPerUnit uint64            `json:"requests_per_unit,omitempty"`
	Unlimited       bool              `json:"unlimited,omitempty"`
	Name            string            `json:"name,omitempty"`
	Replaces        []RateLimitName   `json:"replaces,omitempty"`
	Algorithm       string            `json:"algorithm,omitempty"`
	TimeUnit        Duration          `json:"time_unit,omitempty"`
	BurstCapacity   uint64            `json:"burst_capacity,omitempty"`
	Headers         *RateLimitHeaders `json:"headers,omitempty"`
	FailMode        string            `json:"fail_mode,omitempty"`
}

// RateLimitName names a limit in `replaces`.
type RateLimitName struct {
	Name string `json:"name"`
}

// RouteRateLimit is a route's rate_limit field.
type RouteRateLimit struct {
	// Policies are ids of rate-limits objects (policy shape) applied to the route.
	Policies []string `json:"policies,omitempty"`
	// Limits are inline policies; an empty id becomes "<route id>-<index>".
	Limits []RateLimit `json:"limits,omitempty"`
	// FailMode overrides the settings' default for this route's limits (open|closed).
	FailMode string `json:"fail_mode,omitempty"`
	// SkipGlobal: the settings' global policies do not apply to this route.
	SkipGlobal bool `json:"skip_global,omitempty"`
}

// GlobalRateLimit is the rate-limit part of the settings object.
type GlobalRateLimit struct {
	// Policies are ids of rate-limits objects applied to every route (one counter across
	// routes, per the policy's `by`).
	Policies []string `json:"policies,omitempty"`
	// Limits are inline global policies; an empty id becomes "global-<index>".
	Limits []RateLimit `json:"limits,omitempty"`
	// FailMode is the default when the counter store is down: open (default) or closed.
	FailMode string `json:"fail_mode,omitempty"`
	// Headers is the default response header selection for limits without their own.
	Headers *RateLimitHeaders `json:"headers,omitempty"`
}

// Rate-limit algorithms.
const (
	AlgorithmFixedWindow   = "fixed_window"
	AlgorithmSlidingWindow = "sliding_window"
	AlgorithmTokenBucket   = "token_bucket"
	AlgorithmLeakyBucket   = "leaky_bucket"
)

// RateLimitAlgorithms lists the accepted algorithm names.
var RateLimitAlgorithms = []string{AlgorithmFixedWindow, AlgorithmSlidingWindow, AlgorithmTokenBucket, AlgorithmLeakyBucket}

// RateLimitBy lists the accepted `by` values.
var RateLimitBy = []string{"route", "ip", "user", "api_key", "tenant", "header"}

// EnvoyUnits maps envoyproxy/ratelimit unit names to their length (month = 30 days and
// year = 365 days, as envoyproxy/ratelimit counts them).
var EnvoyUnits = map[string]time.Duration{
	"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour,
	"week": 7 * 24 * time.Hour, "month": 30 * 24 * time.Hour, "year": 365 * 24 * time.Hour,
}

// GetID returns the id.
func (r *RateLimit) GetID() string { return r.ID }

// SetID sets the id.
func (r *RateLimit) SetID(id string) { r.ID = id }

// IsDomain reports whether the object is an envoyproxy/ratelimit domain config.
func (r *RateLimit) IsDomain() bool { return r.Domain != "" || len(r.Descriptors) > 0 }

// EffectiveAlgorithm returns the policy's algorithm (strategy or algorithm; default token_bucket).
func (r *RateLimit) EffectiveAlgorithm() string {
	switch {
	case r.Strategy != "":
		return r.Strategy
	case r.Algorithm != "":
		return r.Algorithm
	}
	return AlgorithmTokenBucket
}

// EffectiveBy returns the policy's `by` (default route).
func (r *RateLimit) EffectiveBy() string {
	if r.By == "" {
		return "route"
	}
	return r.By
}

// Validate checks the object in whichever shape it has.
func (r *RateLimit) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, r.ID)
	if r.IsDomain() {
		r.validateDomain(&errs)
	} else {
		r.validatePolicy(&errs)
	}
	return errs
}

func (r *RateLimit) validatePolicy(errs *FieldErrors) {
	if r.Strategy != "" && r.Algorithm != "" && r.Strategy != r.Algorithm {
		errs.Add("algorithm", "is an alias of strategy; set one of them")
	}
	alg := r.EffectiveAlgorithm()
	if !contains(RateLimitAlgorithms, alg) {
		f := "strategy"
		if r.Strategy == "" {
			f = "algorithm"
		}
		errs.Add(f, "must be one of %s", strings.Join(RateLimitAlgorithms, ", "))
	}
	hasLimit := r.RequestsPerUnit > 0
	if !hasLimit && r.SpikeArrest == nil && r.Quota == nil {
		errs.Add("requests_per_unit", "is required (or spike_arrest, or quota)")
	}
	if r.RequestsPerUnit > math.MaxUint32 {
		errs.Add("requests_per_unit", "must be at most %d", uint64(math.MaxUint32))
	}
	if hasLimit && r.TimeUnit <= 0 {
		errs.Add("time_unit", "is required with requests_per_unit (a duration such as \"1s\", \"1m\", \"1h\", \"24h\", \"7d\")")
	}
	if r.TimeUnit < 0 {
		errs.Add("time_unit", "must be positive")
	}
	if r.TimeUnit > 0 && r.TimeUnit.D() < time.Millisecond {
		errs.Add("time_unit", "must be at least 1ms")
	}
	if r.TimeUnit.D() > 366*24*time.Hour {
		errs.Add("time_unit", "must be at most 366 days (use quota for calendar months)")
	}
	if r.BurstCapacity > math.MaxUint32 {
		errs.Add("burst_capacity", "must be at most %d", uint64(math.MaxUint32))
	}
	if r.BurstCapacity > 0 && (alg == AlgorithmFixedWindow || alg == AlgorithmSlidingWindow) {
		errs.Add("burst_capacity", "applies to token_bucket and leaky_bucket only")
	}
	by := r.EffectiveBy()
	if !contains(RateLimitBy, by) {
		errs.Add("by", "must be one of %s", strings.Join(RateLimitBy, ", "))
	}
	if by == "header" {
		if r.Header == "" {
			errs.Add("header", "is required when by is header")
		} else if !headerName.MatchString(r.Header) {
			errs.Add("header", "must be a valid header name")
		}
	} else if r.Header != "" {
		errs.Add("header", "is only used when by is header")
	}
	checkFailMode(errs, "fail_mode", r.FailMode)
	if s := r.SpikeArrest; s != nil {
		if s.RatePerSecond == 0 {
			errs.Add("spike_arrest.rate_per_second", "must be at least 1")
		}
		if s.RatePerSecond > 1_000_000 {
			errs.Add("spike_arrest.rate_per_second", "must be at most 1000000")
		}
		if s.Burst > math.MaxUint32 {
			errs.Add("spike_arrest.burst", "must be at most %d", uint64(math.MaxUint32))
		}
	}
	if q := r.Quota; q != nil {
		if q.PerDay == 0 && q.PerMonth == 0 {
			errs.Add("quota", "needs per_day or per_month")
		}
		if q.PerDay > math.MaxUint32 {
			errs.Add("quota.per_day", "must be at most %d", uint64(math.MaxUint32))
		}
		if q.PerMonth > math.MaxUint32 {
			errs.Add("quota.per_month", "must be at most %d", uint64(math.MaxUint32))
		}
	}
}

func (r *RateLimit) validateDomain(errs *FieldErrors) {
	if r.Domain == "" {
		errs.Add("domain", "is required with descriptors")
	}
	policyFields := []struct {
		name string
		set  bool
	}{
		{"strategy", r.Strategy != ""}, {"algorithm", r.Algorithm != ""}, {"requests_per_unit", r.RequestsPerUnit != 0},
		{"time_unit", r.TimeUnit != 0}, {"burst_capacity", r.BurstCapacity != 0}, {"by", r.By != ""},
		{"header", r.Header != ""}, {"spike_arrest", r.SpikeArrest != nil}, {"quota", r.Quota != nil},
		{"headers", r.Headers != nil}, {"fail_mode", r.FailMode != ""}, {"shadow_mode", r.ShadowMode},
	}
	for _, f := range policyFields {
		if f.set {
			errs.Add(f.name, "is a policy field; a domain config sets limits inside descriptors")
		}
	}
	validateDescriptors(errs, "descriptors", r.Descriptors)
}

func validateDescriptors(errs *FieldErrors, path string, ds []RateLimitDescriptor) {
	seen := map[string]bool{}
	for i, d := range ds {
		p := fmt.Sprintf("%s[%d]", path, i)
		if d.Key == "" {
			errs.Add(p+".key", "is required")
		}
		composite := d.Key
		if d.Value != "" {
			composite += "_" + d.Value
		}
		if seen[composite] {
			errs.Add(p, "duplicate descriptor %q", composite)
		}
		seen[composite] = true
		if d.ShareThreshold && !strings.HasSuffix(composite, "*") {
			errs.Add(p+".share_threshold", "can only be used with a wildcard value (ending in '*')")
		}
		if rl := d.RateLimit; rl != nil {
			validateDescriptorLimit(errs, p+".rate_limit", rl)
		}
		validateDescriptors(errs, p+".descriptors", d.Descriptors)
	}
}

func validateDescriptorLimit(errs *FieldErrors, p string, rl *DescriptorRateLimit) {
	_, unitOK := EnvoyUnits[strings.ToLower(rl.Unit)]
	switch {
	case rl.Unlimited:
		if unitOK || rl.TimeUnit != 0 {
			errs.Add(p+".unit", "must not be set when unlimited")
		}
	case rl.Unit != "" && rl.TimeUnit != 0:
		errs.Add(p+".time_unit", "set unit or time_unit, not both")
	case rl.Unit == "" && rl.TimeUnit == 0:
		errs.Add(p+".unit", "is required (second, minute, hour, day, week, month, year; or time_unit)")
	case rl.Unit != "" && !unitOK:
		errs.Add(p+".unit", "invalid rate limit unit %q (second, minute, hour, day, week, month, year)", rl.Unit)
	case rl.TimeUnit < 0 || (rl.TimeUnit > 0 && rl.TimeUnit.D() < time.Millisecond):
		errs.Add(p+".time_unit", "must be at least 1ms")
	}
	if rl.RequestsPerUnit > math.MaxUint32 {
		errs.Add(p+".requests_per_unit", "must be at most %d", uint64(math.MaxUint32))
	}
	if rl.Algorithm != "" && !contains(RateLimitAlgorithms, rl.Algorithm) {
		errs.Add(p+".algorithm", "must be one of %s", strings.Join(RateLimitAlgorithms, ", "))
	}
	if rl.BurstCapacity > math.MaxUint32 {
		errs.Add(p+".burst_capacity", "must be at most %d", uint64(math.MaxUint32))
	}
	for j, rp := range rl.Replaces {
		if rp.Name == "" {
			errs.Add(fmt.Sprintf("%s.replaces[%d].name", p, j), "must not be empty")
		} else if rp.Name == rl.Name {
			errs.Add(fmt.Sprintf("%s.replaces[%d].name", p, j), "must not name the limit itself")
		}
	}
	checkFailMode(errs, p+".fail_mode", rl.FailMode)
}

func checkFailMode(errs *FieldErrors, field, v string) {
	if v != "" && v != "open" && v != "closed" {
		errs.Add(field, "must be open or closed")
	}
}

// InlineID returns the id of the route's i-th inline limit: its own id, or "<route id>-<i>".
func (rr *RouteRateLimit) InlineID(routeID string, i int) string {
	if id := rr.Limits[i].ID; id != "" {
		return id
	}
	return fmt.Sprintf("%s-%d", routeID, i)
}

// Validate checks the route's rate_limit field.
func (rr *RouteRateLimit) Validate() FieldErrors {
	var errs FieldErrors
	validatePolicyRefs(&errs, rr.Policies, rr.Limits)
	checkFailMode(&errs, "fail_mode", rr.FailMode)
	return errs
}

// InlineID returns the id of the i-th inline global limit: its own id, or "global-<i>".
func (g *GlobalRateLimit) InlineID(i int) string {
	if id := g.Limits[i].ID; id != "" {
		return id
	}
	return fmt.Sprintf("global-%d", i)
}

// Validate checks the settings' rate_limit field.
func (g *GlobalRateLimit) Validate() FieldErrors {
	var errs FieldErrors
	validatePolicyRefs(&errs, g.Policies, g.Limits)
	checkFailMode(&errs, "fail_mode", g.FailMode)
	return errs
}

// MaxPoliciesPerScope bounds the policies (ids and inline limits together) of one route and of
// the settings: each becomes one descriptor in every rate-limit call Envoy makes for the route,
// and the rate-limit service refuses a call of more than 64 descriptors (ratelimit
// MaxDescriptors), which Envoy would take as "allow". A route's own and the global ones together
// stay within that.
const MaxPoliciesPerScope = 32

func validatePolicyRefs(errs *FieldErrors, ids []string, limits []RateLimit) {
	if n := len(ids) + len(limits); n > MaxPoliciesPerScope {
		errs.Add("policies", "%d policies and inline limits; at most %d apply to one route or to all routes", n, MaxPoliciesPerScope)
	}
	seen := map[string]bool{}
	for i, id := range ids {
		f := fmt.Sprintf("policies[%d]", i)
		if !validID(id) {
			errs.Add(f, "must be the id of a rate-limits object")
		}
		if seen[id] {
			errs.Add(f, "duplicate policy %q", id)
		}
		seen[id] = true
	}
	for i := range limits {
		l := &limits[i]
		f := fmt.Sprintf("limits[%d]", i)
		if l.IsDomain() {
			errs.Add(f+".domain", "inline limits use the policy shape; put domain configs in rate-limits")
			continue
		}
		errs.Nest(f, l.Validate())
	}
}
