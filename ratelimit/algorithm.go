package ratelimit

import "sort"

// The four algorithms, on integer microseconds. The Redis script (script.go) implements the
// same arithmetic step for step; the store tests run one table against both.
//
//   - fixed_window: a counter per window [start, end); admits while count+cost <= limit.
//   - sliding_window: an exact sliding log. The times of admitted requests in (now-period,
//     now] are kept; a request is admitted only if their number plus its cost is at most the
//     limit, so no window of that length ever holds more than the limit.
//   - token_bucket: a bucket of Burst tokens refilled one token per T1; the balance is kept
//     in microseconds of refill (capacity Burst*T1), so the arithmetic is exact.
//   - leaky_bucket: GCRA (virtual scheduling). TAT advances T1 per request; a request is
//     admitted while TAT-now stays within Burst*T1.

// state is one counter's state in the memory store.
type state struct {
	count  uint64  // fixed window
	log    []int64 // sliding window, sorted admission times (one per unit of cost)
	a, b   int64   // token bucket: balance, last; leaky bucket: a = TAT
	expire int64   // when the state is no longer needed
	used   bool
}

// pending is a decided but not yet applied change.
type pending struct {
	count uint64
	a, b  int64
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
		if n+c.Cost <= c.Limit {
			r.Allowed, r.Remaining = true, c.Limit-n-c.Cost
		} else {
			r.RetryAfter = r.Reset
			if n < c.Limit {
				r.Remaining = c.Limit - n
			}
		}
		return r, pending{count: n + c.Cost}
	case AlgSlidingWindow:
		var log []int64
		if st != nil {
			log = st.log[slidingStart(st.log, now-c.Period):]
		}
		n := uint64(len(log))
		var r Result
		// Reset: until the newest request leaves the window (then all capacity is back).
		if n+c.Cost <= c.Limit {
			r.Allowed, r.Remaining = true, c.Limit-n-c.Cost
			if c.Cost > 0 {
				r.Reset = c.Period
			} else if n > 0 {
				r.Reset = log[n-1] + c.Period - now
			}
		} else {
			if n < c.Limit {
				r.Remaining = c.Limit - n
			}
			if n > 0 { // empty only when the cost alone is over the limit
				r.Reset = log[n-1] + c.Period - now
			}
			if c.Cost > c.Limit {
				r.RetryAfter = c.Period
			} else {
				k := n + c.Cost - c.Limit // the k-th oldest must leave the window
				r.RetryAfter = log[k-1] + c.Period - now
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
		need := int64(c.Cost) * c.Period
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
		newTAT := tat + int64(c.Cost)*c.Period
		r := Result{}
		if newTAT-now <= tau {
			r.Allowed = true
			r.Remaining = uint64((tau - (newTAT - now)) / c.Period)
			r.Reset = newTAT - now
		} else {
			r.Remaining = uint64((tau - (tat - now)) / c.Period)
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
		st.count = p.count
		st.expire = c.WindowEnd
	case AlgSlidingWindow:
		st.log = st.log[slidingStart(st.log, now-c.Period):]
		for i := uint64(0); i < c.Cost; i++ {
			// Keep the log sorted even if the clock stepped back.
			j := sort.Search(len(st.log), func(k int) bool { return st.log[k] > now })
			st.log = append(st.log, 0)
			copy(st.log[j+1:], st.log[j:])
			st.log[j] = now
		}
		if len(st.log) > 0 {
			st.expire = st.log[len(st.log)-1] + c.Period
		}
	case AlgTokenBucket:
		st.a, st.b = p.a, p.b
		st.expire = now + (int64(c.Burst)*c.Period - p.a)
	case AlgLeakyBucket:
		st.a = p.a
		st.expire = p.a
	}
}

// slidingStart returns the index of the first entry newer than cutoff.
func slidingStart(log []int64, cutoff int64) int {
	return sort.Search(len(log), func(i int) bool { return log[i] > cutoff })
}

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
