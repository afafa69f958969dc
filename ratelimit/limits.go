package ratelimit

import (
	"time"

	"github.com/api-gateway/api-gateway/ir"
)

// Caps on the shape of one ShouldRateLimit request. A request past any of them is refused
// with gRPC InvalidArgument before anything is counted: the work and the state one request can
// cause stay bounded, so one request can never slow down or change the answers of another.
const (
	// MaxDescriptors is the most descriptors one request may carry. Envoy sends one per
	// rate_limits action list that matched on the route (a handful in practice).
	MaxDescriptors = ir.MaxRateLimitDescriptors
	// MaxDescriptorEntries is the most entries one descriptor may carry (one per action of
	// one rate_limits entry; real configurations use one to five).
	MaxDescriptorEntries = ir.MaxRateLimitEntries
)

// maxKeyTag is the longest a counter key's hash tag (domain and entries) is kept as it is;
// a longer one is replaced by its SHA-256 (buildChecks), so the memory a counter takes in
// Redis or in the memory store does not grow with the request's descriptor values.
const maxKeyTag = 512

// A per-descriptor hits_addend (uint64) is not capped: one above maxRequests can never fit
// and is counted as maxRequests+1 (denied without store work), as the reference denies it.
// Envoy sends these costs from the request itself (a body size, a token count) and fails
// open on an error, so refusing them would admit them uncounted.

// Bounds on the configuration, checked when rules compile (compileLimit) and on limit
// overrides: with them every number the stores compute (counts plus a cost, a bucket's
// capacity in µs, a time plus twice a span) stays below 2^53, exact in the Redis script's Lua
// doubles as in Go's integers, so both stores give the same answers for every request.
const (
	// maxRequests is the largest requests_per_unit (and burst) a rule may have.
	maxRequests = 1 << 50
	// maxSpan is the longest period a rule may have, and the longest time a bucket may take to
	// refill (burst × emission interval): 50 years.
	maxSpan = 50 * 365 * 24 * time.Hour
)

// metricUnknown is the label value of what the configuration does not name (a limit override's
// domain or descriptor outside it).
const metricUnknown = "unknown"

// neverFits reports whether c's counter can never hold cost units, whatever it holds: more
// than a window's limit, or a bucket's burst. Such a check is denied without asking the store.
func neverFits(c *Check, cost uint64) bool {
	switch c.Alg {
	case AlgTokenBucket, AlgLeakyBucket:
		return cost > c.Burst
	default:
		return cost > c.Limit
	}
}

// neverSpan is the reset and retry-after reported for a check that can never hold its cost:
// when the counter would be full again if it were full now (fixed window: its end; sliding
// window: a period; buckets: burst × emission interval). Waiting never admits the request; it
// tells the client not to retry at once.
func neverSpan(c *Check, now int64) int64 {
	switch c.Alg {
	case AlgFixedWindow:
		return c.WindowEnd - now
	case AlgSlidingWindow:
		return c.Period
	default:
		return int64(c.Burst) * c.Period
	}
}
