package ratelimit

// The four algorithms, on integer microseconds. The Redis script (script.go) implements the
// same arithmetic step for step; the store tests run one table against both.
//
//   - fixed_window: a counter per window [start, end); admits while count+cost <= limit.
//   - sliding_window: a sliding window of slidingBuckets+1 counts. Time is cut into buckets
//     of width w = ceil(period/slidingBuckets), aligned on the Unix epoch; a unit admitted at
//     time x counts in bucket floor(x/w) and keeps counting until its whole bucket has left
//     the window, i.e. while now-period < (bucket+1)*w. A request is admitted only if the
//     counted units plus its cost are at most the limit. What it keeps of an exact sliding
//     log: never more than the limit in any window of the period (every unit is counted at
//     least as long as it is in the window), and a unit counts at most w longer than the
//     exact log would count it, so a denial comes at most one bucket (period/slidingBuckets)
//     earlier than an exact log's. Work and state per check are bounded by slidingBuckets
//     whatever the cost and the limit (the exact log kept one entry per unit: a cost of a
//     million took seconds and hundreds of megabytes).
//   - token_bucket: a bucket of Burst tokens refilled one token per T1; the balance is kept
//     in microseconds of refill (capacity Burst*T1), so the arithmetic is exact.
//   - leaky_bucket: GCRA (virtual scheduling). TAT advances T1 per request; a request is
//     admitted while TAT-now stays within Burst*T1.

// state is one counter's state in the memory store.
type state struct {
	count  uint64   // fixed window
	win    []uint64 // sliding window: units per bucket, from bucket a on (at most slidingBuckets+1)
	a, b   int64    // token bucket: balance, last; leaky bucket: a = TAT; sliding: first bucket
	expire int64    // when the state is no longer needed
	used   bool
}

// pending is a decided but not yet applied change.
type pending struct {
	a, b int64
}

// decide computes a check's result on st (nil = no state) without changing it.
func decide(st *state, now int64, c *Check) (Result, pending) {
	switch c.Alg {
	case AlgFixedWindow:
		var n uint64
		if st != nil {
			n = st.count
		}
		r := Result{Reset: c.WindowEnd - now}
		if fits(n, c.Cost, c.Limit) {
			r.Allowed, r.Remaining = true, c.Limit-n-c.Cost
		} else {
			r.RetryAfter = r.Reset
			if n < c.Limit {
				r.Remaining = c.Limit - n
			}
		}
		return r, pending{}
	case AlgSlidingWindow:
		sw := slideView(st, now, c.Period)
		n := sw.sum()
		var r Result
		// Reset: until the newest counted unit's bucket leaves the window (then all capacity
		// is back).
		if fits(n, c.Cost, c.Limit) {
			r.Allowed, r.Remaining = true, c.Limit-n-c.Cost
			if c.Cost > 0 {
				r.Reset = sw.leaves(max(sw.cur, sw.last())) - now
			} else if n > 0 {
				r.Reset = sw.leaves(sw.newest()) - now
			}
		} else {
			if n < c.Limit {
				r.Remaining = c.Limit - n
			}
			if n > 0 { // empty only when the cost alone is over the limit
				r.Reset = sw.leaves(sw.newest()) - now
			}
			if c.Cost > c.Limit {
				r.RetryAfter = c.Period
			} else {
				// The oldest buckets must leave until k units have gone.
				k, i := n+c.Cost-c.Limit, 0
				for gone := uint64(0); ; i++ {
					if gone += sw.n[i]; gone >= k {
						break
					}
				}
				r.RetryAfter = sw.leaves(sw.first+int64(i)) - now
			}
		}
		return r, pending{}
	case AlgTokenBucket:
		capacity := int64(c.Burst) * c.Period
		bal, last := capacity, now
		if st != nil {
			bal, last = st.a, st.b
			if now > last {
				bal += now - last
				last = now
			}
			if bal > capacity {
				bal = capacity
			}
		}
		// A cost above the burst never fits: counted as burst+1, so the product stays small.
		need := int64(min(c.Cost, c.Burst+1)) * c.Period
		r := Result{}
		if bal >= need {
			bal -= need
			r.Allowed = true
		} else {
			r.RetryAfter = need - bal
		}
		r.Remaining = uint64(bal / c.Period)
		r.Reset = capacity - bal
		return r, pending{a: bal, b: last}
	case AlgLeakyBucket:
		tau := int64(c.Burst) * c.Period
		tat := now
		if st != nil && st.a > now {
			tat = st.a
		}
		// A cost above the burst never fits: counted as burst+1, so the product stays small.
		newTAT := tat + int64(min(c.Cost, c.Burst+1))*c.Period
		r := Result{}
		if newTAT-now <= tau {
			r.Allowed = true
			r.Remaining = uint64((tau - (newTAT - now)) / c.Period)
			r.Reset = newTAT - now
		} else {
			// tat may be past now+tau after the burst was lowered (the key names the rate, not
			// the burst): nothing remains then.
			r.Remaining = uint64(max(tau-(tat-now), 0) / c.Period)
			r.Reset = tat - now
			r.RetryAfter = newTAT - tau - now
		}
		return r, pending{a: newTAT}
	}
	return Result{Allowed: true}, pending{}
}

// apply charges an admitted check.
func apply(st *state, now int64, c *Check, p pending) {
	st.used = true
	switch c.Alg {
	case AlgFixedWindow:
		st.count += c.Cost // added, not set: a group may name one counter twice (as the script does)
		st.expire = c.WindowEnd
	case AlgSlidingWindow:
		slideCharge(st, now, c.Period, c.Cost)
	case AlgTokenBucket:
		st.a, st.b = p.a, p.b
		st.expire = now + (int64(c.Burst)*c.Period - p.a)
	case AlgLeakyBucket:
		st.a = p.a
		st.expire = p.a
	}
}

// fits reports whether n units plus cost stay within limit, without overflow.
func fits(n, cost, limit uint64) bool { return n <= limit && cost <= limit-n }

// uncharged turns an admitting check's result into the capacity as it stands, for a group
// that was not charged because another check denied (the script does the same).
func uncharged(r Result, now int64, c *Check, p pending) Result {
	if c.Cost == 0 {
		return r
	}
	switch c.Alg {
	case AlgFixedWindow, AlgSlidingWindow:
		r.Remaining += c.Cost
	case AlgTokenBucket:
		bal := p.a + int64(c.Cost)*c.Period
		r.Remaining = uint64(bal / c.Period)
		r.Reset = int64(c.Burst)*c.Period - bal
	case AlgLeakyBucket:
		tat := p.a - int64(c.Cost)*c.Period
		r.Remaining = uint64((int64(c.Burst)*c.Period - (tat - now)) / c.Period)
		r.Reset = tat - now
	}
	return r
}
