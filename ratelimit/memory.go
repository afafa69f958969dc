package ratelimit

import (
	"context"
	"hash/maphash"
	"sort"
	"sync"
)

const memoryShards = 64

// MemoryStore keeps counters in this process: 64 shards, each a map under its own mutex, so
// concurrent requests for different keys rarely share a lock. Expired counters are swept a
// little at a time as requests arrive (by the request's clock, never the wall clock).
type MemoryStore struct {
	seed   maphash.Seed
	shards [memoryShards]memShard
}

type memShard struct {
	mu  sync.Mutex
	m   map[string]*state
	ops int
	_   [40]byte // keep shards on separate cache lines
}

// NewMemoryStore returns an empty in-process store.
func NewMemoryStore() *MemoryStore {
	s := &MemoryStore{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = map[string]*state{}
	}
	return s
}

// Name returns "memory".
func (s *MemoryStore) Name() string { return "memory" }

// Close does nothing.
func (s *MemoryStore) Close() error { return nil }

// Len returns the number of live counters (for tests).
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].m)
		s.shards[i].mu.Unlock()
	}
	return n
}

func (s *MemoryStore) shard(key string) int {
	return int(maphash.String(s.seed, key) % memoryShards)
}

// Eval evaluates each group atomically (its shards locked in index order).
func (s *MemoryStore) Eval(_ context.Context, now int64, groups [][]Check) ([][]Result, error) {
	if len(groups) == 1 && len(groups[0]) == 1 {
		// The common request, one check: its answer and the slice holding it in one allocation.
		a := &struct {
			out [1][]Result
			res [1]Result
		}{}
		a.out[0] = s.evalGroup(now, groups[0], a.res[:])
		return a.out[:], nil
	}
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	out, all := make([][]Result, len(groups)), make([]Result, n)
	for gi, g := range groups {
		out[gi], all = s.evalGroup(now, g, all[:len(g):len(g)]), all[len(g):]
	}
	return out, nil
}

// evalGroup decides group g into res (len(g) results).
func (s *MemoryStore) evalGroup(now int64, g []Check, res []Result) []Result {
	if len(g) == 1 {
		sh := &s.shards[s.shard(g[0].Key)]
		sh.mu.Lock()
		st := sh.m[g[0].Key]
		r, p := decide(st, now, &g[0])
		if r.Allowed && g[0].Cost > 0 {
			if st == nil {
				st = &state{}
				sh.m[g[0].Key] = st
			}
			apply(st, now, &g[0], p)
		}
		sh.sweep(now)
		sh.mu.Unlock()
		res[0] = r
		return res
	}
	idx := make([]int, len(g))
	for i := range g {
		idx[i] = s.shard(g[i].Key)
	}
	order := append([]int(nil), idx...)
	sort.Ints(order)
	for i, x := range order {
		if i == 0 || x != order[i-1] {
			s.shards[x].mu.Lock()
		}
	}
	pend := make([]pending, len(g))
	all := true
	for i := range g {
		res[i], pend[i] = decide(s.shards[idx[i]].m[g[i].Key], now, &g[i])
		all = all && res[i].Allowed
	}
	if all {
		for i := range g {
			if g[i].Cost == 0 {
				continue
			}
			sh := &s.shards[idx[i]]
			st := sh.m[g[i].Key]
			if st == nil {
				st = &state{}
				sh.m[g[i].Key] = st
			}
			apply(st, now, &g[i], pend[i])
		}
	} else {
		for i := range res {
			if res[i].Allowed {
				res[i] = uncharged(res[i], now, &g[i], pend[i])
			}
		}
	}
	for i, x := range order {
		if i == 0 || x != order[i-1] {
			s.shards[x].sweep(now)
			s.shards[x].mu.Unlock()
		}
	}
	return res
}

// sweep removes a few expired counters every 256 operations (called with mu held).
func (sh *memShard) sweep(now int64) {
	sh.ops++
	if sh.ops < 256 {
		return
	}
	sh.ops = 0
	n := 0
	for k, st := range sh.m {
		if st.expire <= now {
			delete(sh.m, k)
		}
		n++
		if n >= 512 {
			break
		}
	}
}
