package analytics

import (
	"slices"
	"sync"
	"time"
)

// aggregator holds the minute rows not yet written to the store. It is bounded: each minute
// keeps at most maxKeys distinct keys; past that, a request is counted under its route with
// the other dimensions set to Other (while fewer than maxKeys/10 such route rows exist), and
// then under the all-Other key.
type aggregator struct {
	mu      sync.Mutex
	pending map[bucketKey]*Stats
	perMin  map[int64]*minuteCount
	// flushing is the batch being written to the store; queries still see it.
	flushing map[bucketKey]*Stats
	maxKeys  int
	// maxRows bounds the pending rows when flushes keep failing; the oldest minutes go
	// first.
	maxRows int
}

type minuteCount struct{ keys, overflowKeys int }

func newAggregator(maxKeys int) *aggregator {
	return &aggregator{pending: make(map[bucketKey]*Stats), perMin: make(map[int64]*minuteCount), maxKeys: maxKeys,
		maxRows: maxKeys * pendingMinutes}
}

// add counts e in its minute; it reports whether e was folded into an Other key.
func (a *aggregator) add(e *Entry) (overflow bool) {
	k := Key{Route: e.Route, APIKey: e.APIKey, User: e.User, Tenant: e.Tenant}
	bk := bucketKey{res: Minute, start: e.Time.Unix() - mod(e.Time.Unix(), 60), key: k}
	a.mu.Lock()
	st := a.pending[bk]
	if st == nil {
		st, overflow = a.newRow(&bk)
	}
	st.add(e)
	a.mu.Unlock()
	return overflow
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// newRow creates the row for bk, or for its overflow key when the minute is full (bk is
// rewritten to the key actually used). Called with mu held.
func (a *aggregator) newRow(bk *bucketKey) (*Stats, bool) {
	mc := a.perMin[bk.start]
	if mc == nil {
		mc = &minuteCount{}
		a.perMin[bk.start] = mc
	}
	if mc.keys >= a.maxKeys {
		bk.key = Key{Route: bk.key.Route, APIKey: Other, User: Other, Tenant: Other}
		if st := a.pending[*bk]; st != nil {
			return st, true
		}
		if mc.overflowKeys >= max(a.maxKeys/10, 1) {
			bk.key = Key{Route: Other, APIKey: Other, User: Other, Tenant: Other}
			if st := a.pending[*bk]; st != nil {
				return st, true
			}
		}
		mc.overflowKeys++
		st := &Stats{}
		a.pending[*bk] = st
		return st, true
	}
	mc.keys++
	st := &Stats{}
	a.pending[*bk] = st
	return st, false
}

// takeForFlush moves the pending rows to the flushing batch and returns it. The caller must
// call doneFlush with the outcome.
func (a *aggregator) takeForFlush() map[bucketKey]*Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return nil
	}
	batch := a.pending
	a.flushing = batch
	a.pending = make(map[bucketKey]*Stats, len(batch))
	a.perMin = make(map[int64]*minuteCount, len(a.perMin))
	return batch
}

// pendingMinutes is how many full minutes of rows are kept while the store is failing.
const pendingMinutes = 30

// doneFlush ends a flush; a failed batch is merged back so the next flush retries it. When
// that makes more than maxRows rows, the oldest minutes are dropped; it returns the number
// of requests dropped.
func (a *aggregator) doneFlush(batch map[bucketKey]*Stats, ok bool) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushing = nil
	if ok {
		return 0
	}
	for bk, st := range batch {
		if cur := a.pending[bk]; cur != nil {
			cur.Merge(st)
			continue
		}
		a.pending[bk] = st
		mc := a.perMin[bk.start]
		if mc == nil {
			mc = &minuteCount{}
			a.perMin[bk.start] = mc
		}
		mc.keys++
	}
	return a.trim()
}

// trim drops the oldest minutes while there are more than maxRows rows. Called with mu held.
func (a *aggregator) trim() uint64 {
	if len(a.pending) <= a.maxRows {
		return 0
	}
	rows := map[int64]int{}
	for bk := range a.pending {
		rows[bk.start]++
	}
	starts := make([]int64, 0, len(rows))
	for s := range rows {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	drop := map[int64]bool{}
	n := len(a.pending)
	for _, s := range starts {
		if n <= a.maxRows {
			break
		}
		drop[s] = true
		n -= rows[s]
	}
	var dropped uint64
	for bk, st := range a.pending {
		if drop[bk.start] {
			dropped += st.Requests
			delete(a.pending, bk)
		}
	}
	for s := range drop {
		delete(a.perMin, s)
	}
	return dropped
}

// snapshot calls fn for every in-memory row (pending and being flushed) of a minute in
// [from, to). fn must not retain st.
func (a *aggregator) snapshot(from, to time.Time, fn func(start time.Time, k Key, st *Stats)) {
	f, t := from.Unix(), to.Unix()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range []map[bucketKey]*Stats{a.pending, a.flushing} {
		for bk, st := range m {
			if bk.start >= f && bk.start < t {
				fn(time.Unix(bk.start, 0).UTC(), bk.key, st)
			}
		}
	}
}

// size returns the number of pending rows.
func (a *aggregator) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}
