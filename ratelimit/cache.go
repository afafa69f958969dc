package ratelimit

import (
	"hash/maphash"
	"sync"
)

// overCache remembers counters that denied a request until the earliest time the same
// request could pass, so repeated calls over the limit are answered without the store: the
// same cost (a fixed window: any cost at least as large, its denials last to the window end);
// a request of another cost on a counter whose answer depends on it goes to the store, and
// the entry is dropped, as is one of another limit or burst (a configuration change). A cost
// above what a sliding window or bucket can ever hold is not cached (it never passes).
// Nothing but time can make such a counter admit earlier, so the answer is exact, unless the
// store says otherwise (earlyAdmitter).
type overCache struct {
	seed   maphash.Seed
	shards [32]overShard
}

type overShard struct {
	mu   sync.RWMutex
	m    map[string]overEntry
	puts int
}

type overEntry struct {
	until int64 // µs: when the same request could pass (a cached denial's retry-after)
	reset int64 // µs: when the counter is back to full capacity (its reset)
	valid int64 // µs: until when the entry is used (until, or earlier)
	cost  uint64
	fixed bool // a fixed window: the denial holds for any cost ≥ cost until the window ends
	// The check's limit and burst when it denied: another limit (a configuration change on
	// the same counter) is the store's to decide.
	limit, burst uint64
}

func newOverCache() *overCache {
	c := &overCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = map[string]overEntry{}
	}
	return c
}

// earlyAdmitter is a store that can admit a counter's request before the retry-after it
// answered, because units charged for someone else come back (ReservingStore): the cache
// uses its denials for at most denialTTL (the answer still reports the true time to wait),
// and none for a counter the store admits from locally (holds).
type earlyAdmitter interface {
	holds(key string) bool // key's counter may be admitted here without the store
	denialTTL() int64      // µs: how long a cached denial may be used
}

// denied reports whether key denies a request of cost at now: the entry (until: when it
// could pass; reset: when the counter is full again).
func (c *overCache) denied(ch *Check, cost uint64, now int64) (overEntry, bool) {
	key := ch.Key
	sh := &c.shards[maphash.String(c.seed, key)%32]
	sh.mu.RLock()
	e, ok := sh.m[key]
	sh.mu.RUnlock()
	if !ok || e.valid <= now {
		return overEntry{}, false
	}
	same := e.limit == ch.Limit && e.burst == ch.Burst
	if same && e.fixed && cost >= e.cost {
		return e, true
	}
	if same && !e.fixed && cost == e.cost {
		return e, true
	}
	if !e.fixed || !same {
		// Another cost on a counter whose answer depends on it (retry-after, reset): the
		// store decides, and the entry goes (a smaller cost may be admitted and move both).
		sh.mu.Lock()
		if cur, ok := sh.m[key]; ok && cur == e {
			delete(sh.m, key)
		}
		sh.mu.Unlock()
	}
	return overEntry{}, false
}

// put remembers that key denies a request of cost until until (and is full again at
// reset); the entry is used until valid (at most until).
func (c *overCache) put(ch *Check, cost uint64, until, reset, valid, now int64) {
	key := ch.Key
	sh := &c.shards[maphash.String(c.seed, key)%32]
	sh.mu.Lock()
	sh.m[key] = overEntry{until: until, reset: reset, valid: min(valid, until), cost: cost,
		fixed: ch.Alg == AlgFixedWindow, limit: ch.Limit, burst: ch.Burst}
	sh.puts++
	if sh.puts >= 1024 {
		sh.puts = 0
		for k, e := range sh.m {
			if e.valid <= now {
				delete(sh.m, k)
			}
		}
	}
	sh.mu.Unlock()
}
