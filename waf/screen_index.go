package waf

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// Evaluating each rule's condition on each value would scan every value once per rule
// (~100 rules in phase 2). Instead, the phase's rules share one index of all their
// literals: each distinct transformed value is scanned once for every literal at once,
// and each rule's condition is then read off the hits (hnode). Rules that share a
// transformation chain share the transformed value; chains that leave a value unchanged
// (the usual case) share its scan.

// condBail says when a folded condition must leave non-ASCII input to the operator.
type condBail uint8

const (
	bailNever     condBail = iota // @pm: only ASCII letters fold
	bailFoldRunes                 // (?i): input with ſ or K (they fold onto s and k)
	bailNonASCII                  // (?i) with class members the condition leaves out
)

// ruleCond is a rule's necessary condition on its transformed value.
type ruleCond struct {
	cond *litCond
	fold bool // compare against the ASCII-lowercased value (literals are lowercase)
	bail condBail
}

// eval is the condition on one value, without the index (multiMatch rules).
func (c ruleCond) eval(s string) bool {
	if c.fold {
		if c.bail != bailNever {
			for i := 0; i < len(s); i++ {
				if s[i] >= utf8.RuneSelf && (c.bail == bailNonASCII || foldsToASCII(s[i:])) {
					return true
				}
			}
		}
		s = lowerASCII(s)
	}
	return c.cond.eval(s)
}

// litIndex finds, in one pass, every literal of a set that occurs in a string. Literals
// of two or three bytes are candidates where a bitset of their first two bytes says so;
// longer ones where a bitset of a hash of their first four bytes does. Candidates are then
// compared.
type litIndex struct {
	lits  []string
	ids   map[string]int
	short bucketSet // literals of 2-3 bytes by their first two bytes
	long  bucketSet // longer literals by a hash of their first four bytes
}

// bucketSet lists literal ids by a 16-bit key.
type bucketSet struct {
	bits  [1024]uint64
	start []uint32 // offsets into order by key (65537 entries)
	order []int32
}

func (b *bucketSet) build(ids []int32, keys []uint16) {
	b.start = make([]uint32, 1<<16+1)
	for _, k := range keys {
		b.start[int(k)+1]++
	}
	for i := 1; i < len(b.start); i++ {
		b.start[i] += b.start[i-1]
	}
	b.order = make([]int32, len(ids))
	fill := slices.Clone(b.start)
	for i, id := range ids {
		k := keys[i]
		b.bits[k>>6] |= 1 << (k & 63)
		b.order[fill[k]] = id
		fill[k]++
	}
}

func (b *bucketSet) bucket(k uint16) []int32 {
	if b.bits[k>>6]&(1<<(k&63)) == 0 {
		return nil
	}
	return b.order[b.start[k]:b.start[k+1]]
}

func newLitIndex() *litIndex { return &litIndex{ids: map[string]int{}} }

// add returns the id of lit (at least two bytes).
func (x *litIndex) add(lit string) int {
	if id, ok := x.ids[lit]; ok {
		return id
	}
	id := len(x.lits)
	x.ids[lit] = id
	x.lits = append(x.lits, lit)
	return id
}

func pairKey(s string) uint16 { return uint16(s[0])<<8 | uint16(s[1]) }

func quadKey(s string) uint16 {
	h := (uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24) * 0x9E3779B1
	return uint16(h >> 16)
}

func (x *litIndex) build() {
	var shortIDs, longIDs []int32
	var shortKeys, longKeys []uint16
	for id, l := range x.lits {
		if len(l) < 4 {
			shortIDs, shortKeys = append(shortIDs, int32(id)), append(shortKeys, pairKey(l))
		} else {
			longIDs, longKeys = append(longIDs, int32(id)), append(longKeys, quadKey(l))
		}
	}
	x.short.build(shortIDs, shortKeys)
	x.long.build(longIDs, longKeys)
	x.ids = nil
}

func (x *litIndex) words() int { return (len(x.lits) + 63) / 64 }

// scan sets in hits the bit of every literal that occurs in s.
func (x *litIndex) scan(s string, hits []uint64) {
	if len(x.lits) == 0 {
		return
	}
	for i := 0; i+1 < len(s); i++ {
		rest := s[i:]
		for _, id := range x.short.bucket(pairKey(rest)) {
			if hits[id>>6]&(1<<(id&63)) == 0 && strings.HasPrefix(rest, x.lits[id]) {
				hits[id>>6] |= 1 << (id & 63)
			}
		}
		if len(rest) < 4 {
			continue
		}
		for _, id := range x.long.bucket(quadKey(rest)) {
			if hits[id>>6]&(1<<(id&63)) == 0 && strings.HasPrefix(rest, x.lits[id]) {
				hits[id>>6] |= 1 << (id & 63)
			}
		}
	}
}

// hnode is a litCond over an index's hits.
type hnode struct {
	op    condOp
	lit   int
	bytes *[4]uint64
	mask  []maskWord // condOr: any of these literals
	subs  []*hnode
}

type maskWord struct {
	i    int
	bits uint64
}

func compileHNode(c *litCond, x *litIndex) *hnode {
	switch c.op {
	case condLit:
		if len(c.lit) < 2 {
			var set [4]uint64
			set[c.lit[0]>>6] |= 1 << (c.lit[0] & 63)
			return &hnode{op: condBytes, bytes: &set}
		}
		return &hnode{op: condLit, lit: x.add(c.lit)}
	case condBytes:
		return &hnode{op: condBytes, bytes: c.bytes}
	case condAnd:
		n := &hnode{op: condAnd}
		for _, s := range c.subs {
			n.subs = append(n.subs, compileHNode(s, x))
		}
		return n
	}
	n := &hnode{op: condOr}
	var ids []int
	if c.any != nil {
		for _, l := range c.any.lits {
			ids = append(ids, x.add(l))
		}
	}
	for _, s := range c.subs {
		if s.op == condLit && len(s.lit) >= 2 {
			ids = append(ids, x.add(s.lit))
			continue
		}
		n.subs = append(n.subs, compileHNode(s, x))
	}
	words := map[int]uint64{}
	for _, id := range ids {
		words[id>>6] |= 1 << (id & 63)
	}
	for i, b := range words {
		n.mask = append(n.mask, maskWord{i, b})
	}
	slices.SortFunc(n.mask, func(a, b maskWord) int { return a.i - b.i })
	return n
}

func (n *hnode) eval(hits []uint64, b *[4]uint64) bool {
	switch n.op {
	case condLit:
		return hits[n.lit>>6]&(1<<(n.lit&63)) != 0
	case condBytes:
		return (n.bytes[0]&b[0])|(n.bytes[1]&b[1])|(n.bytes[2]&b[2])|(n.bytes[3]&b[3]) != 0
	case condAnd:
		for _, s := range n.subs {
			if !s.eval(hits, b) {
				return false
			}
		}
		return true
	}
	for _, m := range n.mask {
		if hits[m.i]&m.bits != 0 {
			return true
		}
	}
	for _, s := range n.subs {
		if s.eval(hits, b) {
			return true
		}
	}
	return false
}

// phasePlan is the screen of one phase.
type phasePlan struct {
	rules    []*screenedRule // every screened rule of the phase (index = screenedRule.idx)
	multi    []*screenedRule // multiMatch rules, evaluated value by value (ruleCond.eval)
	targets  []screenTarget  // distinct targets of the other rules
	uses     [][]targetUse   // by target: the rules reading it, grouped by chain
	useCount []int           // by target: the rules in uses
	chains   [][]screenStep
	exact    *litIndex // literals of unfolded conditions
	folded   *litIndex // literals of folded conditions (lowercase)
}

type targetUse struct {
	chain int
	rules []ruleUse
}

// ruleUse is a rule reading a target, with the bit of the target's variable.
type ruleUse struct {
	r   *screenedRule
	bit uint16
}

// index builds the phase's targets, chains and literal indexes from its rules.
func (pp *phasePlan) index() {
	pp.exact, pp.folded = newLitIndex(), newLitIndex()
	chainIDs := map[string]int{}
	targetIDs := map[screenTarget]int{}
	for i, r := range pp.rules {
		r.idx = i
		if r.multi {
			pp.multi = append(pp.multi, r)
			continue
		}
		x := pp.exact
		if r.rc.fold {
			x = pp.folded
		}
		r.h = compileHNode(r.rc.cond, x)
		ck := r.chainKey
		ci, ok := chainIDs[ck]
		if !ok {
			ci = len(pp.chains)
			chainIDs[ck] = ci
			pp.chains = append(pp.chains, r.steps)
		}
		for k, t := range r.targets {
			ti, ok := targetIDs[t]
			if !ok {
				ti = len(pp.targets)
				targetIDs[t] = ti
				pp.targets = append(pp.targets, t)
				pp.uses = append(pp.uses, nil)
				pp.useCount = append(pp.useCount, 0)
			}
			j := slices.IndexFunc(pp.uses[ti], func(u targetUse) bool { return u.chain == ci })
			if j < 0 {
				pp.uses[ti] = append(pp.uses[ti], targetUse{chain: ci})
				j = len(pp.uses[ti]) - 1
			}
			pp.uses[ti][j].rules = append(pp.uses[ti][j].rules, ruleUse{r, r.varBit[k]})
			pp.useCount[ti]++
		}
	}
	pp.exact.build()
	pp.folded.build()
}

// valueScan is what one transformed value contains.
type valueScan struct {
	tv                  string
	exact, folded       []uint64
	bytes, lower        [4]uint64
	nonASCII, foldRunes bool
}

func (sc *valueScan) fill(pp *phasePlan, tv string) {
	sc.tv = tv
	clear(sc.exact)
	clear(sc.folded)
	sc.bytes = [4]uint64{}
	sc.nonASCII, sc.foldRunes = false, false
	for i := 0; i < len(tv); i++ {
		c := tv[i]
		sc.bytes[c>>6] |= 1 << (c & 63)
		if c >= utf8.RuneSelf {
			sc.nonASCII = true
			if foldsToASCII(tv[i:]) {
				sc.foldRunes = true
			}
		}
	}
	// Lowercase bytes: 'A'..'Z' are bits 1..26 of word 1, 'a'..'z' bits 33..58.
	const upper = uint64((1<<26)-1) << 1
	sc.lower = sc.bytes
	sc.lower[1] = sc.bytes[1]&^upper | (sc.bytes[1]&upper)<<32
	pp.exact.scan(tv, sc.exact)
	if len(pp.folded.lits) > 0 {
		pp.folded.scan(lowerASCII(tv), sc.folded)
	}
}

// matches evaluates r's condition on a scanned value.
func (r *screenedRule) matches(sc *valueScan) bool {
	if !r.rc.fold {
		return r.h.eval(sc.exact, &sc.bytes)
	}
	if sc.nonASCII && (r.rc.bail == bailNonASCII || r.rc.bail == bailFoldRunes && sc.foldRunes) {
		return true
	}
	return r.h.eval(sc.folded, &sc.lower)
}

// applyChain is the chain's result on v, or false when a step we do not compute could
// change v.
func applyChain(steps []screenStep, v string) (string, bool) {
	for _, st := range steps {
		var ok bool
		if v, ok = st(v); !ok {
			return "", false
		}
	}
	return v, true
}

// screenRun is the state of one screen.
type screenRun struct {
	pp    *phasePlan
	maybe []uint16     // by rule: the variables with a value that may match (varBit)
	scans []*valueScan // scans of the current value's transformed values
	n     int          // scans in use
}

func (s *screenRun) scan(tv string) *valueScan {
	for _, sc := range s.scans[:s.n] {
		if sc.tv == tv {
			return sc
		}
	}
	if s.n == len(s.scans) {
		s.scans = append(s.scans, &valueScan{
			exact:  make([]uint64, s.pp.exact.words()),
			folded: make([]uint64, s.pp.folded.words()),
		})
	}
	sc := s.scans[s.n]
	s.n++
	sc.fill(s.pp, tv)
	return sc
}

// value screens v, a value of target ti, for the rules still without a possible match.
func (s *screenRun) value(ti int, v string) {
	pp := s.pp
	for _, u := range pp.uses[ti] {
		pending := false
		for _, ru := range u.rules {
			if s.maybe[ru.r.idx]&ru.bit == 0 {
				pending = true
				break
			}
		}
		if !pending {
			continue
		}
		tv, ok := applyChain(pp.chains[u.chain], v)
		var sc *valueScan
		if ok {
			sc = s.scan(tv)
		}
		for _, ru := range u.rules {
			if s.maybe[ru.r.idx]&ru.bit == 0 && (!ok || ru.r.matches(sc)) {
				s.maybe[ru.r.idx] |= ru.bit
			}
		}
	}
}

// valueCached is value for a short value: what every rule reading target ti makes of v is
// computed once and kept (header values, argument names and common values repeat from
// request to request); the answer is a pure function of (plan, target, value).
func (s *screenRun) valueCached(ti int, v string) {
	pp := s.pp
	key := screenKey{pp: pp, target: ti, value: v}
	bits, ok := screenCache.get(key)
	if !ok {
		bits = make([]uint64, (pp.useCount[ti]+63)/64)
		j := 0
		for _, u := range pp.uses[ti] {
			tv, known := applyChain(pp.chains[u.chain], v)
			var sc *valueScan
			if known {
				sc = s.scan(tv)
			}
			for _, ru := range u.rules {
				if !known || ru.r.matches(sc) {
					bits[j>>6] |= 1 << (j & 63)
				}
				j++
			}
		}
		key.value = strings.Clone(v)
		screenCache.add(key, bits)
	}
	j := 0
	for _, u := range pp.uses[ti] {
		for _, ru := range u.rules {
			if bits[j>>6]&(1<<(j&63)) != 0 {
				s.maybe[ru.r.idx] |= ru.bit
			}
			j++
		}
	}
}

// screenKey identifies a cached screen of one value.
type screenKey struct {
	pp     *phasePlan
	target int
	value  string
}

// screenResults is a bounded cache of screened values: sharded, a full shard is emptied
// (at most screenShards*screenShardSize entries).
type screenResults struct {
	seed   maphash.Seed
	shards [screenShards]struct {
		mu sync.Mutex
		m  map[screenKey][]uint64
	}
}

const (
	screenShards    = 32
	screenShardSize = 1024
)

var screenCache = &screenResults{seed: maphash.MakeSeed()}

func (c *screenResults) shard(k screenKey) int {
	return int(maphash.String(c.seed, k.value) % screenShards)
}

func (c *screenResults) get(k screenKey) ([]uint64, bool) {
	sh := &c.shards[c.shard(k)]
	sh.mu.Lock()
	b, ok := sh.m[k]
	sh.mu.Unlock()
	return b, ok
}

func (c *screenResults) add(k screenKey, b []uint64) {
	sh := &c.shards[c.shard(k)]
	sh.mu.Lock()
	if sh.m == nil || len(sh.m) >= screenShardSize {
		sh.m = make(map[screenKey][]uint64, screenShardSize/4)
	}
	sh.m[k] = b
	sh.mu.Unlock()
}

// run screens the phase's rules for tx. A rule no value can match is removed from the
// transaction; a rule that stays loses the target variables none of whose values can
// match (not for chain heads: Coraza applies a head's target exclusions to its chain).
func (pp *phasePlan) run(tx plugintypes.TransactionState, rm ruleRemover) {
	if len(pp.rules) == 0 {
		return
	}
	var vals screenValues
	s := &screenRun{pp: pp, maybe: make([]uint16, len(pp.rules))}
	for ti, t := range pp.targets {
		for _, md := range vals.get(tx, t) {
			v := md.Value()
			s.n = 0
			if len(v) <= maxCachedValue {
				s.valueCached(ti, v)
			} else {
				s.value(ti, v)
			}
		}
	}
	for _, r := range pp.multi {
		s.maybe[r.idx] = r.mayMatchVars(tx, &vals)
	}
	for i, r := range pp.rules {
		m := s.maybe[i]
		switch {
		case m == 0:
			rm.RemoveRuleByID(r.id)
		case !r.chained:
			if screenObserver != nil {
				screenObserver(r.id)
			}
			for b, v := range r.vars {
				if m&(1<<b) == 0 && r.negations[v] < 2 {
					rm.RemoveRuleTargetByID(r.id, v, "", nil)
				}
			}
		default:
			if screenObserver != nil {
				screenObserver(r.id)
			}
		}
	}
}

// screenObserver, when set (tests), sees the id of every rule a screen keeps.
var screenObserver func(id int)
