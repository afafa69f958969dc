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
	// Extra: a fixed-window check of Cost 1 alone in its group may ask for up to Extra more
	// units, charged with it as far as they fit under the limit (Result.Extra says how many).
	// Otherwise, and in a store that does not charge extra units, it is ignored and none
	// are charged.
	Extra uint64
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
	// Extra: units charged beyond Cost for the caller (at most Check.Extra; only when
	// Allowed). Remaining already counts them as used.
	Extra uint64
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

// Refund is a number of units to subtract from a fixed-window counter.
type Refund struct {
	Key string
	N   int64
}

// RefundStore is a Store whose fixed-window counters can be charged extra units with a
// check (Check.Extra) and given units back. What the units are for is the caller's business
// (see ReservingStore).
//
// A store that grants extra units and cannot hand them to their caller (the caller gave
// up, or another group of its request failed) refunds them itself: units it reports in a
// Result belong to whoever receives that Result.
type RefundStore interface {
	Store
	// Refund subtracts units from counters that still exist (a counter that expired is not
	// recreated), within the store's own timeout when ctx has none sooner. It returns the
	// units refunded and the indexes of the refunds that surely never reached the store
	// (they may be sent again); a refund that failed otherwise may have been applied and is
	// dropped (the counter keeps the units until its window ends: it can only deny more,
	// never admit more).
	Refund(ctx context.Context, units []Refund) (refunded int64, unsent []int)
}

// ceilDiv returns ceil(a/b) for a >= 0, b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
