package ratelimit

import (
	"context"
)

// Algorithm codes shared by the memory store and the Redis script.
type Algorithm byte

// Algorithms. The byte is the code the Redis script dispatches on.
const (
	AlgFixedWindow   Algorithm = 'f'
	AlgSlidingWindow Algorithm = 's'
	AlgTokenBucket   Algorithm = 't'
	AlgLeakyBucket   Algorithm = 'l'
)

// Check is one counter to test and, when its whole group admits, to charge. Times are
// microseconds since the Unix epoch.
type Check struct {
	// Key names the counter (hash-tagged: all keys of one group share a Redis Cluster slot).
	// Fixed-window keys include the window start.
	Key   string
	Alg   Algorithm
	Limit uint64
	// Period: fixed and sliding window length; for token and leaky bucket the emission
	// interval T1 = ceil(period/limit), the time one request's capacity takes to come back.
	Period int64
	// Burst: token_bucket capacity, leaky_bucket tolerance, in requests.
	Burst uint64
	// WindowEnd: fixed windows only, when the window (and its count) ends.
	WindowEnd int64
	Cost      uint64
	// Reserve: a fixed-window check of Cost 1 alone in its group may ask for extra units,
	// charged with it as far as they fit under the limit, for the caller to admit later
	// requests without a round trip (see ReservingStore). Otherwise, and in a store that does
	// not reserve, it is ignored and none are granted.
	Reserve uint64
}

// Result is a check's outcome.
type Result struct {
	Allowed   bool
	Remaining uint64
	// Reset: time until the counter is back to full capacity (fixed: window end; sliding:
	// the newest request leaves the window; buckets: the bucket refills).
	Reset int64
	// RetryAfter: when denied, time until the same request could be admitted.
	RetryAfter int64
	// Reserved: units charged beyond Cost for the caller (at most Check.Reserve; only when
	// Allowed). Remaining already counts them as used.
	Reserved uint64
}

// Store evaluates groups of checks. A group is atomic: it is charged only when every check
// in it admits. Groups are independent of each other. Eval answers all groups of one
// request in one round trip.
type Store interface {
	Eval(ctx context.Context, now int64, groups [][]Check) ([][]Result, error)
	// Name is "memory" or "redis" (metrics label).
	Name() string
	Close() error
}

// ceilDiv returns ceil(a/b) for a >= 0, b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
