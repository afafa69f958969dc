package waf

import (
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// litCond is a necessary condition for a regular expression to match: literal substrings
// the input must contain. A nil *litCond is "no condition" (always maybe).
type litCond struct {
	op    condOp
	lit   string     // condLit
	bytes *[4]uint64 // condBytes: the input contains one of these bytes
	subs  []*litCond // condAnd, condOr
	// any is a multi-literal matcher for condOr nodes whose subs are all literals.
	any *multiLit
}

type condOp uint8

const (
	condLit condOp = iota
	condBytes
	condAnd
	condOr
)

// minFilterLiteral is the shortest literal searched as a substring; single bytes become
// byte-set conditions.
const minFilterLiteral = 2

// maxPrefixes bounds the prefix sets built while analysing concatenations.
const maxPrefixes = 64

// rxFilter decides, before a regular expression runs, that an input cannot match.
// It is built from the pattern's syntax tree and is sound by construction: every literal
// it requires is one that any match must contain (adjacent literals are only joined when
// the tree proves they are adjacent).
type rxFilter struct {
	cond *litCond
	fold bool // literals are lowercase; compare against the ASCII-lowercased input
	// nonASCII: under fold, a character class had non-ASCII members the condition leaves
	// out, so non-ASCII input must go to the regular expression.
	nonASCII bool
}

// newRxFilter analyses pattern (Go syntax, as compiled). It returns nil when the pattern
// yields no useful condition.
func newRxFilter(pattern string) *rxFilter {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	re = re.Simplify()
	a := analyzer{fold: hasFoldCase(re)}
	n := a.node(re)
	if n.cond == nil || a.bad {
		return nil
	}
	finalize(n.cond)
	return &rxFilter{cond: n.cond, fold: a.fold, nonASCII: a.nonASCII}
}

// mayMatch reports false only when the input cannot match the pattern.
func (f *rxFilter) mayMatch(s string) bool {
	if f.fold {
		// The filter folds ASCII only. Under (?i) exactly two non-ASCII characters fold
		// onto ASCII letters (U+017F ſ → s, U+212A K → k): input with one of them, or with
		// any non-ASCII byte when a class member was left out, goes to the expression.
		for i := 0; i < len(s); i++ {
			if s[i] >= utf8.RuneSelf && (f.nonASCII || foldsToASCII(s[i:])) {
				return true
			}
		}
		s = lowerASCII(s)
	}
	return f.cond.eval(s)
}

func (c *litCond) eval(s string) bool {
	switch c.op {
	case condLit:
		return strings.Contains(s, c.lit)
	case condBytes:
		for i := 0; i < len(s); i++ {
			if c.bytes[s[i]>>6]&(1<<(s[i]&63)) != 0 {
				return true
			}
		}
		return false
	case condAnd:
		for _, sub := range c.subs {
			if !sub.eval(s) {
				return false
			}
		}
		return true
	default:
		if c.any != nil && c.any.match(s) {
			return true
		}
		for _, sub := range c.subs {
			if sub.eval(s) {
				return true
			}
		}
		return false
	}
}

// finalize builds multi-literal matchers for large OR nodes of plain literals.
func finalize(c *litCond) {
	if c == nil {
		return
	}
	for _, s := range c.subs {
		finalize(s)
	}
	// A disjunction of several plain literals is searched in one pass. (Mixed
	// disjunctions and short lists are faster as separate substring searches.)
	if c.op != condOr || len(c.subs) < 4 {
		return
	}
	lits := make([]string, 0, len(c.subs))
	for _, s := range c.subs {
		if s.op != condLit {
			return
		}
		lits = append(lits, s.lit)
	}
	c.any = newMultiLit(lits)
	c.subs = nil
}

// nodeInfo is what the analyzer knows about a subexpression.
type nodeInfo struct {
	cond *litCond
	// prefixes: every match starts with one of these (nil: unknown).
	prefixes []string
	// exact: the subexpression matches exactly the string lit (zero-width ones: "").
	exact bool
	lit   string
}

type analyzer struct {
	fold bool
	bad  bool // a literal the filter cannot handle (non-ASCII under fold)
	// nonASCII: a class under fold had non-ASCII members other than ſ and K.
	nonASCII bool
}

// foldsToASCII reports whether s starts with U+017F or U+212A, the only non-ASCII
// characters whose simple case folding includes an ASCII letter.
func foldsToASCII(s string) bool {
	return strings.HasPrefix(s, "\u017f") || strings.HasPrefix(s, "\u212a")
}

func (a *analyzer) literal(runes []rune) string {
	s := string(runes)
	if strings.ContainsRune(s, utf8.RuneError) {
		// Go's regexp matches invalid input bytes as U+FFFD: no byte literal for it.
		a.bad = true
	}
	if a.fold {
		for i := 0; i < len(s); i++ {
			if s[i] >= utf8.RuneSelf {
				a.bad = true
				break
			}
		}
		s = lowerASCII(s)
	}
	return s
}

func (a *analyzer) node(re *syntax.Regexp) nodeInfo {
	switch re.Op {
	case syntax.OpLiteral:
		s := a.literal(re.Rune)
		return nodeInfo{cond: litOf(s), prefixes: []string{s}, exact: true, lit: s}
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText,
		syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return nodeInfo{prefixes: []string{""}, exact: true}
	case syntax.OpCapture:
		return a.node(re.Sub[0])
	case syntax.OpPlus:
		n := a.node(re.Sub[0])
		return nodeInfo{cond: n.cond, prefixes: n.prefixes}
	case syntax.OpRepeat:
		if re.Min >= 1 {
			n := a.node(re.Sub[0])
			return nodeInfo{cond: n.cond, prefixes: n.prefixes}
		}
		return nodeInfo{}
	case syntax.OpAlternate:
		return a.alternate(re.Sub)
	case syntax.OpConcat:
		return a.concat(re.Sub)
	case syntax.OpCharClass:
		return nodeInfo{cond: a.charClass(re.Rune)}
	default: // any char, star, quest, no match
		return nodeInfo{}
	}
}

// charClass is the condition "contains a byte of the class" for classes of ASCII
// characters. Under fold, non-ASCII members are dropped (non-ASCII input bypasses the
// filter) and members are lowercased like the input.
func (a *analyzer) charClass(ranges []rune) *litCond {
	var set [4]uint64
	n := 0
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if hi >= utf8.RuneSelf {
			if !a.fold {
				return nil
			}
			for r := max(lo, utf8.RuneSelf); r <= hi; r++ {
				if r != 0x17f && r != 0x212a {
					a.nonASCII = true
					break
				}
			}
			if lo >= utf8.RuneSelf {
				continue
			}
			hi = utf8.RuneSelf - 1
		}
		for r := lo; r <= hi; r++ {
			b := byte(r)
			if a.fold && b >= 'A' && b <= 'Z' {
				b += 'a' - 'A'
			}
			set[b>>6] |= 1 << (b & 63)
			n++
		}
	}
	if n == 0 || n > 100 {
		return nil
	}
	return &litCond{op: condBytes, bytes: &set}
}

func (a *analyzer) alternate(subs []*syntax.Regexp) nodeInfo {
	var conds []*litCond
	var prefixes []string
	prefixesKnown := true
	condKnown := true
	for _, s := range subs {
		n := a.node(s)
		if n.cond == nil {
			condKnown = false
		} else {
			conds = append(conds, n.cond)
		}
		if n.prefixes == nil || len(prefixes)+len(n.prefixes) > maxPrefixes {
			prefixesKnown = false
		} else {
			prefixes = append(prefixes, n.prefixes...)
		}
	}
	var out nodeInfo
	if condKnown {
		out.cond = orOf(conds)
	}
	if prefixesKnown {
		out.prefixes = prefixes
	}
	return out
}

func (a *analyzer) concat(subs []*syntax.Regexp) nodeInfo {
	var conds []*litCond
	prefixes := []string{""}
	prefixOpen := true // every child so far was exact, so prefixes can still grow
	run := ""          // current run of adjacent exact literals
	allExact := true
	flush := func() {
		if c := litOf(run); c != nil {
			conds = append(conds, c)
		}
		run = ""
	}
	for _, s := range subs {
		n := a.node(s)
		if n.exact {
			run += n.lit
			if prefixOpen {
				for i := range prefixes {
					prefixes[i] += n.lit
				}
			}
			continue
		}
		allExact = false
		// n's prefixes are adjacent to the current run.
		if n.prefixes != nil && len(n.prefixes) > 0 {
			if c := orOf(litsOf(crossJoin([]string{run}, n.prefixes))); c != nil {
				conds = append(conds, c)
			}
		}
		flush()
		if n.cond != nil {
			conds = append(conds, n.cond)
		}
		if prefixOpen {
			if n.prefixes != nil && len(prefixes)*len(n.prefixes) <= maxPrefixes {
				prefixes = crossJoin(prefixes, n.prefixes)
			}
			prefixOpen = false
		}
	}
	flush()
	out := nodeInfo{cond: andOf(conds), prefixes: prefixes}
	if allExact {
		out.exact = true
		out.lit = prefixes[0]
	}
	return out
}

func crossJoin(a, b []string) []string {
	out := make([]string, 0, len(a)*len(b))
	for _, x := range a {
		for _, y := range b {
			out = append(out, x+y)
		}
	}
	return out
}

// litOf is the condition "contains s" (nil for the empty string).
func litOf(s string) *litCond {
	switch {
	case s == "":
		return nil
	case len(s) < minFilterLiteral:
		var set [4]uint64
		set[s[0]>>6] |= 1 << (s[0] & 63)
		return &litCond{op: condBytes, bytes: &set}
	}
	return &litCond{op: condLit, lit: s}
}

// litsOf turns strings into literal conditions; any too-short string makes the
// alternative unconditional, reported as a nil element.
func litsOf(ss []string) []*litCond {
	out := make([]*litCond, len(ss))
	for i, s := range ss {
		out[i] = litOf(s)
	}
	return out
}

// orOf is the disjunction; nil (unconditional) when any alternative is unconditional.
func orOf(cs []*litCond) *litCond {
	if len(cs) == 0 {
		return nil
	}
	for _, c := range cs {
		if c == nil {
			return nil
		}
	}
	if len(cs) == 1 {
		return cs[0]
	}
	var flat []*litCond
	var set *[4]uint64
	add := func(c *litCond) {
		if c.op != condBytes {
			flat = append(flat, c)
			return
		}
		if set == nil {
			set = &[4]uint64{}
		}
		for i := range set {
			set[i] |= c.bytes[i]
		}
	}
	for _, c := range cs {
		if c.op == condOr {
			for _, sub := range c.subs {
				add(sub)
			}
		} else {
			add(c)
		}
	}
	if set != nil {
		flat = append(flat, &litCond{op: condBytes, bytes: set})
	}
	if len(flat) == 1 {
		return flat[0]
	}
	return &litCond{op: condOr, subs: flat}
}

// andOf is the conjunction of the known conditions.
func andOf(cs []*litCond) *litCond {
	var flat []*litCond
	for _, c := range cs {
		switch {
		case c == nil:
		case c.op == condAnd:
			flat = append(flat, c.subs...)
		default:
			flat = append(flat, c)
		}
	}
	switch len(flat) {
	case 0:
		return nil
	case 1:
		return flat[0]
	}
	return &litCond{op: condAnd, subs: flat}
}

func hasFoldCase(re *syntax.Regexp) bool {
	if re.Flags&syntax.FoldCase != 0 {
		return true
	}
	for _, s := range re.Sub {
		if hasFoldCase(s) {
			return true
		}
	}
	return false
}

// lowerASCII lowercases ASCII letters, allocating only when there is one to change.
func lowerASCII(s string) string {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			break
		}
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// multiLit finds whether any of several literals (each at least minFilterLiteral bytes)
// occurs in a string: a bitset of the literals' first two bytes selects candidate
// positions, which are then compared.
type multiLit struct {
	pairs   [1024]uint64 // bit per first-two-bytes value
	byStart map[uint16][]string
	lits    []string
}

func newMultiLit(lits []string) *multiLit {
	m := &multiLit{byStart: map[uint16][]string{}, lits: lits}
	for _, l := range lits {
		k := uint16(l[0])<<8 | uint16(l[1])
		m.pairs[k>>6] |= 1 << (k & 63)
		m.byStart[k] = append(m.byStart[k], l)
	}
	return m
}

func (m *multiLit) match(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		k := uint16(s[i])<<8 | uint16(s[i+1])
		if m.pairs[k>>6]&(1<<(k&63)) == 0 {
			continue
		}
		for _, l := range m.byStart[k] {
			if strings.HasPrefix(s[i:], l) {
				return true
			}
		}
	}
	return false
}
