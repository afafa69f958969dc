package ratelimit

// The bucketed sliding window (see algorithm.go): the memory store's half. The Redis script's
// sliding functions (script.go) do the same arithmetic on the same buckets.

// slidingBuckets is the number of buckets a period is cut into: a unit counts at most
// period/slidingBuckets longer than it is in the window (5% of it). Each counter keeps at most
// slidingBuckets+1 counts.
const slidingBuckets = 20

// slidingWidth is the width w of a sliding window's buckets, in µs: ceil(period/slidingBuckets)
// (at least 1), so that slidingBuckets buckets cover the period.
func slidingWidth(period int64) int64 { return max(ceilDiv(period, slidingBuckets), 1) }

// floorDiv is floor(a/b) for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// slide is a sliding window's counted buckets at one instant: n[i] units in bucket first+i.
type slide struct {
	w, period  int64
	first, cur int64 // the oldest bucket still counted, the bucket now falls in
	n          []uint64
}

// slideView returns st's buckets that count at now (those that left the window dropped;
// buckets newer than cur, after the clock stepped back, still count).
func slideView(st *state, now, period int64) slide {
	w := slidingWidth(period)
	sw := slide{w: w, period: period, first: floorDiv(now-period, w), cur: floorDiv(now, w)}
	if st == nil || len(st.win) == 0 {
		return sw
	}
	if skip := sw.first - st.a; skip < int64(len(st.win)) {
		if skip > 0 {
			sw.n = st.win[skip:]
		} else {
			sw.first, sw.n = st.a, st.win
		}
	}
	return sw
}

func (sw *slide) sum() uint64 {
	var n uint64
	for _, x := range sw.n {
		n += x
	}
	return n
}

// last is the newest bucket held (first-1 when none).
func (sw *slide) last() int64 { return sw.first + int64(len(sw.n)) - 1 }

// newest is the newest bucket holding units (first-1 when none).
func (sw *slide) newest() int64 {
	i := len(sw.n) - 1
	for i >= 0 && sw.n[i] == 0 {
		i--
	}
	return sw.first + int64(i)
}

// leaves is when bucket b stops counting: when the window's start reaches its end.
func (sw *slide) leaves(b int64) int64 { return (b+1)*sw.w + sw.period }

// slideCharge adds cost units at now: to now's bucket, or to the newest one held when the
// clock stepped back (counting them later than they came never admits more). Buckets that left
// the window are dropped first, so st.win holds at most slidingBuckets+1 counts.
func slideCharge(st *state, now, period int64, cost uint64) {
	sw := slideView(st, now, period)
	if len(sw.n) == 0 {
		st.a, st.win = sw.cur, append(st.win[:0], cost)
	} else {
		k := copy(st.win, sw.n) // in place: the slice keeps its capacity
		st.a, st.win = sw.first, st.win[:k]
		for b := sw.last(); b < sw.cur; b++ {
			st.win = append(st.win, 0)
		}
		st.win[len(st.win)-1] += cost
	}
	st.expire = (st.a+int64(len(st.win)))*sw.w + period
}
