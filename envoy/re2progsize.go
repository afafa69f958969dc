package envoy

// RE2 program size, computed the way RE2 computes it, because Envoy refuses a regex whose
// size exceeds re2.max_program_size.error_level (default 100; see re2ProgramSizeLimit) and Go's
// regexp package has no equivalent number.
//
// RE2::ProgramSize() (google/re2 re2/re2.cc) is prog_->size(): the instruction count of the
// forward program after Prog::Flatten (re2/prog.cc). The program is compiled
// (re2/compile.cc Compiler::Compile) from the pattern minus its required literal prefix
// (re2/regexp.cc Regexp::RequiredPrefix, called from RE2::Init), simplified
// (re2/simplify.cc), with a leading \A / trailing \z turned into empty matches
// (IsAnchorStart / IsAnchorEnd), UTF-8 byte ranges built as a suffix trie
// (AddRuneRangeUTF8, Add_80_10ffff, AddSuffixRecursive), a Match appended and, for an
// unanchored pattern, a leading .*? loop. Prog::Optimize then drops Nops and marks Alt-to-Match
// loops; Prog::Flatten rewrites the instruction graph into lists (MarkSuccessors,
// MarkDominator, EmitList), and that list form is what ProgramSize counts.
//
// This file mirrors those functions step by step on Go's regexp/syntax parse tree (Go's parser
// is a port of RE2's), including RE2's own simplifier (CoalesceWalker, SimplifyWalker with its
// squashing constructors) and the repetition squashing of RE2's parser. One parser difference
// is left: when an alternation's branches share a leading literal or character class that is
// all of two or more branches (\d|[0-9], a|a, or [^\n]x|[^\n]), RE2 factors it out and keeps
// an alternation of empty matches that Go's parser collapses, so RE2 needs a few more
// instructions than computed here. Route patterns we generate never have such branches; on
// 1,000 random patterns built to hit every construct, 38 had them (up to 23 instructions,
// 22%, more in RE2) and every other size was exact (testdata/re2_program_sizes.tsv, sizes from
// RE2 itself, libre2 2022-06-01; TestRE2ProgramSizeMatchesRE2).

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"sort"
	"unicode"
)

// re2MaxCompile bounds the emulated compiler: past this many instructions the pattern is
// refused without finishing (a program that big is far above any program size limit; the
// bound keeps hostile patterns cheap).
const re2MaxCompile = 20000

var errRE2TooLarge = errors.New("RE2 program too large")

// RE2ProgramSize returns RE2's ProgramSize() of pattern compiled with RE2's default options
// (what Envoy's safe_regex / google_re2 matcher uses), or an error if Go's RE2 parser refuses
// the pattern or the program would exceed re2MaxCompile instructions.
func RE2ProgramSize(pattern string) (int, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, err
	}
	// Counted repetitions are expanded by Simplify; refuse patterns whose expansion alone
	// would be past the bound before building it.
	if n := re2Expanded(re); n > re2MaxCompile {
		return 0, errRE2TooLarge
	}
	re = re2Squash(re)
	// RE2::Init compiles the suffix after a required literal prefix (^ then a literal).
	re = re2RequiredPrefixSuffix(re)
	// Regexp::Simplify: CoalesceWalker, then SimplifyWalker.
	sre := re2Simplify(re2Coalesce(re))
	c := &re2Compiler{cache: map[uint64]uint32{}}
	c.inst = append(c.inst, re2Inst{op: re2Fail}) // instruction 0
	anchorStart, sre := re2AnchorStart(sre, 0)
	anchorEnd, sre := re2AnchorEnd(sre, 0)
	_ = anchorEnd
	all := c.walk(sre)
	if c.failed {
		return 0, errRE2TooLarge
	}
	all = c.cat(all, c.match())
	start := all.begin
	if !anchorStart {
		all = c.cat(c.dotStar(), all)
	}
	startUnanchored := all.begin
	if c.failed {
		return 0, errRE2TooLarge
	}
	if start == 0 && startUnanchored == 0 {
		return 1, nil // Compiler::Finish: no possible match, the Fail instruction only
	}
	p := &re2Prog{inst: c.inst, start: start, startUnanchored: startUnanchored}
	p.optimize()
	return p.flatten(), nil
}

// re2Expanded is an upper bound of the tree size after counted repetitions are expanded.
func re2Expanded(re *syntax.Regexp) int {
	n := 1 + len(re.Rune)
	for _, s := range re.Sub {
		n += re2Expanded(s)
		if n > re2MaxCompile {
			return n
		}
	}
	if re.Op == syntax.OpRepeat {
		k := re.Max
		if k < re.Min+1 {
			k = re.Min + 1
		}
		n *= k
	}
	return n
}

// re2RequiredPrefixSuffix mirrors Regexp::RequiredPrefix: a concatenation of one or more \A
// followed by a literal is compiled without them (the literal is matched by memcmp).
func re2RequiredPrefixSuffix(re *syntax.Regexp) *syntax.Regexp {
	if re.Op != syntax.OpConcat {
		return re
	}
	i := 0
	for i < len(re.Sub) && re.Sub[i].Op == syntax.OpBeginText {
		i++
	}
	if i == 0 || i >= len(re.Sub) || re.Sub[i].Op != syntax.OpLiteral {
		return re
	}
	lit := re.Sub[i]
	// RE2's parser makes a case-folded rune with folds beyond ASCII (k: K, k, U+212A) a
	// character class, which ends the literal: only the runes before it are a prefix.
	n := len(lit.Rune)
	if lit.Flags&syntax.FoldCase != 0 {
		for j, r := range lit.Rune {
			if re2FoldsToClass(r) {
				n = j
				break
			}
		}
	}
	if n == 0 {
		return re
	}
	rest := append([]*syntax.Regexp{}, re.Sub[i+1:]...)
	if n < len(lit.Rune) {
		tail := *lit
		tail.Rune = lit.Rune[n:]
		rest = append([]*syntax.Regexp{&tail}, rest...)
	}
	switch len(rest) {
	case 0:
		return &syntax.Regexp{Op: syntax.OpEmptyMatch, Flags: re.Flags}
	case 1:
		return rest[0]
	default:
		return &syntax.Regexp{Op: syntax.OpConcat, Flags: re.Flags, Sub: rest}
	}
}

// re2FoldsToClass reports whether RE2's parser turns the case-folded rune r into a
// character class (parse.cc PushLiteral / PushRegexp): any rune with other cases, except
// an ASCII letter whose only other case is ASCII (kept as a folding literal).
func re2FoldsToClass(r rune) bool {
	orbit := re2FoldOrbit(r)
	return len(orbit) > 1 && !(len(orbit) == 2 && 'A' <= orbit[0] && orbit[0] <= 'Z' && orbit[1] == orbit[0]+'a'-'A')
}

// re2FoldOrbit is r and its other cases, sorted.
func re2FoldOrbit(r rune) []rune {
	orbit := []rune{r}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		orbit = append(orbit, f)
	}
	sort.Slice(orbit, func(i, j int) bool { return orbit[i] < orbit[j] })
	return orbit
}

// re2Squash mirrors the squashing in RE2's parser (parse.cc PushRepeatOp): a repetition
// operator applied directly to another, with the same flags, is one operator: x** is x*,
// and any mix of *, + and ? is *. Go's parser keeps both.
func re2Squash(re *syntax.Regexp) *syntax.Regexp {
	for i, s := range re.Sub {
		re.Sub[i] = re2Squash(s) // the tree is this call's own parse: changed in place
	}
	rep := func(op syntax.Op) bool { return op == syntax.OpStar || op == syntax.OpPlus || op == syntax.OpQuest }
	if rep(re.Op) && rep(re.Sub[0].Op) && re.Flags == re.Sub[0].Flags {
		sub := re.Sub[0]
		if sub.Op == re.Op {
			return sub
		}
		c := *sub
		c.Op = syntax.OpStar
		return &c
	}
	return re
}

// re2Coalesce mirrors simplify.cc CoalesceWalker: in a concatenation, a repetition of a
// literal or class followed by another repetition of it, by it, or by a literal string
// starting with it becomes one counted repetition (a+a* is a{1,}, a*aa is a{2,}).
func re2Coalesce(re *syntax.Regexp) *syntax.Regexp {
	for i, s := range re.Sub {
		re.Sub[i] = re2Coalesce(s) // the tree is this call's own parse: changed in place
	}
	if re.Op != syntax.OpConcat {
		return re
	}
	can := false
	for i := 0; i+1 < len(re.Sub); i++ {
		if re2CanCoalesce(re.Sub[i], re.Sub[i+1]) {
			can = true
			break
		}
	}
	if !can {
		return re
	}
	for i := 0; i+1 < len(re.Sub); i++ {
		if re2CanCoalesce(re.Sub[i], re.Sub[i+1]) {
			re.Sub[i], re.Sub[i+1] = re2DoCoalesce(re.Sub[i], re.Sub[i+1])
		}
	}
	subs := re.Sub[:0:0]
	for _, s := range re.Sub {
		if s.Op != syntax.OpEmptyMatch {
			subs = append(subs, s)
		}
	}
	re.Sub = subs
	return re
}

func re2Repeat(op syntax.Op) bool {
	return op == syntax.OpStar || op == syntax.OpPlus || op == syntax.OpQuest || op == syntax.OpRepeat
}

// re2Single reports a literal rune, a class or any char (RE2's Literal, CharClass, AnyChar).
func re2Single(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpLiteral:
		return len(re.Rune) == 1
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return true
	}
	return false
}

// re2CanCoalesce mirrors CoalesceWalker::CanCoalesce.
func re2CanCoalesce(r1, r2 *syntax.Regexp) bool {
	if !re2Repeat(r1.Op) || !re2Single(r1.Sub[0]) {
		return false
	}
	x := r1.Sub[0]
	if re2Repeat(r2.Op) && x.Equal(r2.Sub[0]) && r1.Flags&syntax.NonGreedy == r2.Flags&syntax.NonGreedy {
		return true
	}
	if x.Equal(r2) {
		return true
	}
	return x.Op == syntax.OpLiteral && r2.Op == syntax.OpLiteral && len(r2.Rune) > 1 && r2.Rune[0] == x.Rune[0] &&
		x.Flags&syntax.FoldCase == r2.Flags&syntax.FoldCase
}

// re2DoCoalesce mirrors CoalesceWalker::DoCoalesce: the new pair of r1 and r2.
func re2DoCoalesce(r1, r2 *syntax.Regexp) (*syntax.Regexp, *syntax.Regexp) {
	x := r1.Sub[0]
	n := &syntax.Regexp{Op: syntax.OpRepeat, Flags: r1.Flags, Sub: []*syntax.Regexp{x}}
	switch r1.Op {
	case syntax.OpStar:
		n.Min, n.Max = 0, -1
	case syntax.OpPlus:
		n.Min, n.Max = 1, -1
	case syntax.OpQuest:
		n.Min, n.Max = 0, 1
	default:
		n.Min, n.Max = r1.Min, r1.Max
	}
	empty := &syntax.Regexp{Op: syntax.OpEmptyMatch}
	switch {
	case r2.Op == syntax.OpStar:
		n.Max = -1
	case r2.Op == syntax.OpPlus:
		n.Min++
		n.Max = -1
	case r2.Op == syntax.OpQuest:
		if n.Max != -1 {
			n.Max++
		}
	case r2.Op == syntax.OpRepeat:
		n.Min += r2.Min
		if r2.Max == -1 {
			n.Max = -1
		} else if n.Max != -1 {
			n.Max += r2.Max
		}
	case re2Single(r2):
		n.Min++
		if n.Max != -1 {
			n.Max++
		}
	default: // a literal string starting with x's rune
		k := 1
		for k < len(r2.Rune) && r2.Rune[k] == x.Rune[0] {
			k++
		}
		n.Min += k
		if n.Max != -1 {
			n.Max += k
		}
		if k < len(r2.Rune) {
			rest := &syntax.Regexp{Op: syntax.OpLiteral, Flags: r2.Flags, Rune: r2.Rune[k:]}
			return n, rest
		}
	}
	return empty, n
}

// re2Simplify mirrors simplify.cc SimplifyWalker::PostVisit (Go's Simplify differs in
// where it squashes nested repetitions).
func re2Simplify(re *syntax.Regexp) *syntax.Regexp {
	switch re.Op {
	case syntax.OpConcat, syntax.OpAlternate, syntax.OpCapture:
		c := *re
		c.Sub = make([]*syntax.Regexp, len(re.Sub))
		for i, s := range re.Sub {
			c.Sub[i] = re2Simplify(s)
		}
		return &c
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		sub := re2Simplify(re.Sub[0])
		if sub.Op == syntax.OpEmptyMatch || sub.Op == re.Op && sub.Flags == re.Flags {
			return sub
		}
		return &syntax.Regexp{Op: re.Op, Flags: re.Flags, Sub: []*syntax.Regexp{sub}}
	case syntax.OpRepeat:
		sub := re2Simplify(re.Sub[0])
		if sub.Op == syntax.OpEmptyMatch {
			return sub
		}
		return re2SimplifyRepeat(sub, re.Min, re.Max, re.Flags)
	}
	return re
}

func re2EmptyOp(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpWordBoundary, syntax.OpNoWordBoundary,
		syntax.OpBeginText, syntax.OpEndText:
		return true
	}
	return false
}

// re2SimplifyRepeat mirrors SimplifyWalker::SimplifyRepeat: x{2,} is xx+, x{2,5} is
// xx(x(x(x)?)?)?, built with the squashing constructors.
func re2SimplifyRepeat(x *syntax.Regexp, lo, hi int, f syntax.Flags) *syntax.Regexp {
	allEmpty := re2EmptyOp(x)
	if x.Op == syntax.OpConcat || x.Op == syntax.OpAlternate {
		allEmpty = true
		for _, s := range x.Sub {
			allEmpty = allEmpty && re2EmptyOp(s)
		}
	}
	if allEmpty {
		lo, hi = min(lo, 1), min(hi, 1)
	}
	cat := func(subs ...*syntax.Regexp) *syntax.Regexp { return re2Concat(subs, f) }
	if hi == -1 {
		switch lo {
		case 0:
			return re2StarPlusQuest(syntax.OpStar, x, f)
		case 1:
			return re2StarPlusQuest(syntax.OpPlus, x, f)
		}
		subs := make([]*syntax.Regexp, 0, lo)
		for i := 0; i < lo-1; i++ {
			subs = append(subs, x)
		}
		return cat(append(subs, re2StarPlusQuest(syntax.OpPlus, x, f))...)
	}
	if lo == 0 && hi == 0 {
		return &syntax.Regexp{Op: syntax.OpEmptyMatch, Flags: f}
	}
	if lo == 1 && hi == 1 {
		return x
	}
	var n *syntax.Regexp
	if lo > 0 {
		subs := make([]*syntax.Regexp, lo)
		for i := range subs {
			subs[i] = x
		}
		n = cat(subs...)
	}
	if hi > lo {
		suf := re2StarPlusQuest(syntax.OpQuest, x, f)
		for i := lo + 1; i < hi; i++ {
			suf = re2StarPlusQuest(syntax.OpQuest, &syntax.Regexp{Op: syntax.OpConcat, Flags: f, Sub: []*syntax.Regexp{x, suf}}, f)
		}
		if n == nil {
			n = suf
		} else {
			n = &syntax.Regexp{Op: syntax.OpConcat, Flags: f, Sub: []*syntax.Regexp{n, suf}}
		}
	}
	if n == nil {
		return &syntax.Regexp{Op: syntax.OpNoMatch, Flags: f}
	}
	return n
}

// re2StarPlusQuest mirrors Regexp::StarPlusOrQuest, which squashes a repetition of a
// repetition with the same flags.
func re2StarPlusQuest(op syntax.Op, sub *syntax.Regexp, f syntax.Flags) *syntax.Regexp {
	if sub.Flags == f {
		if op == sub.Op {
			return sub
		}
		if sub.Op == syntax.OpStar || sub.Op == syntax.OpPlus || sub.Op == syntax.OpQuest {
			if sub.Op == syntax.OpStar {
				return sub
			}
			return &syntax.Regexp{Op: syntax.OpStar, Flags: f, Sub: sub.Sub}
		}
	}
	return &syntax.Regexp{Op: op, Flags: f, Sub: []*syntax.Regexp{sub}}
}

// re2AnchorStart mirrors IsAnchorStart (compile.cc): a leading \A (through up to 4 levels of
// concatenation and capture) is replaced by an empty literal string and reported.
func re2AnchorStart(re *syntax.Regexp, depth int) (bool, *syntax.Regexp) {
	if re == nil || depth >= 4 {
		return false, re
	}
	switch re.Op {
	case syntax.OpConcat:
		if len(re.Sub) > 0 {
			if ok, sub := re2AnchorStart(re.Sub[0], depth+1); ok {
				subs := append([]*syntax.Regexp{sub}, re.Sub[1:]...)
				return true, re2Concat(subs, re.Flags)
			}
		}
	case syntax.OpCapture:
		if ok, sub := re2AnchorStart(re.Sub[0], depth+1); ok {
			return true, &syntax.Regexp{Op: syntax.OpCapture, Flags: re.Flags, Cap: re.Cap, Name: re.Name, Sub: []*syntax.Regexp{sub}}
		}
	case syntax.OpBeginText:
		return true, &syntax.Regexp{Op: syntax.OpLiteral, Flags: re.Flags}
	}
	return false, re
}

// re2AnchorEnd mirrors IsAnchorEnd (compile.cc) for a trailing \z.
func re2AnchorEnd(re *syntax.Regexp, depth int) (bool, *syntax.Regexp) {
	if re == nil || depth >= 4 {
		return false, re
	}
	switch re.Op {
	case syntax.OpConcat:
		if n := len(re.Sub); n > 0 {
			if ok, sub := re2AnchorEnd(re.Sub[n-1], depth+1); ok {
				subs := append(append([]*syntax.Regexp{}, re.Sub[:n-1]...), sub)
				return true, re2Concat(subs, re.Flags)
			}
		}
	case syntax.OpCapture:
		if ok, sub := re2AnchorEnd(re.Sub[0], depth+1); ok {
			return true, &syntax.Regexp{Op: syntax.OpCapture, Flags: re.Flags, Cap: re.Cap, Name: re.Name, Sub: []*syntax.Regexp{sub}}
		}
	case syntax.OpEndText:
		return true, &syntax.Regexp{Op: syntax.OpLiteral, Flags: re.Flags}
	}
	return false, re
}

// re2Concat mirrors Regexp::Concat: one operand is returned as is.
func re2Concat(subs []*syntax.Regexp, flags syntax.Flags) *syntax.Regexp {
	if len(subs) == 1 {
		return subs[0]
	}
	return &syntax.Regexp{Op: syntax.OpConcat, Flags: flags, Sub: subs}
}

// RE2 instruction opcodes (prog.h InstOp).
const (
	re2Alt = iota
	re2AltMatch
	re2ByteRange
	re2Capture
	re2EmptyWidth
	re2Match
	re2Nop
	re2Fail
)

type re2Inst struct {
	op        uint8
	lo, hi    uint8
	fold      bool
	out, out1 uint32
}

// re2Patch is compile.cc's PatchList: p>>1 is an instruction, p&1 picks out1 over out.
type re2Patch struct{ head, tail uint32 }

type re2Frag struct {
	begin    uint32
	end      re2Patch
	nullable bool
}

type re2Compiler struct {
	inst      []re2Inst
	failed    bool
	cache     map[uint64]uint32 // rune_cache_
	rangeFrag re2Frag           // rune_range_
}

func (c *re2Compiler) alloc(n int) int {
	if c.failed || len(c.inst)+n > re2MaxCompile {
		c.failed = true
		return -1
	}
	id := len(c.inst)
	for i := 0; i < n; i++ {
		c.inst = append(c.inst, re2Inst{})
	}
	return id
}

func (c *re2Compiler) patch(l re2Patch, v uint32) {
	for l.head != 0 {
		ip := &c.inst[l.head>>1]
		if l.head&1 != 0 {
			l.head = ip.out1
			ip.out1 = v
		} else {
			l.head = ip.out
			ip.out = v
		}
	}
}

func (c *re2Compiler) appendList(l1, l2 re2Patch) re2Patch {
	if l1.head == 0 {
		return l2
	}
	if l2.head == 0 {
		return l1
	}
	ip := &c.inst[l1.tail>>1]
	if l1.tail&1 != 0 {
		ip.out1 = l2.head
	} else {
		ip.out = l2.head
	}
	return re2Patch{l1.head, l2.tail}
}

func mk(p uint32) re2Patch { return re2Patch{p, p} }

func (c *re2Compiler) cat(a, b re2Frag) re2Frag {
	if a.begin == 0 || b.begin == 0 {
		return re2Frag{}
	}
	// Elide a no-op.
	if in := c.inst[a.begin]; in.op == re2Nop && a.end.head == a.begin<<1 && in.out == 0 {
		c.patch(a.end, b.begin)
		return b
	}
	c.patch(a.end, b.begin)
	return re2Frag{a.begin, b.end, a.nullable && b.nullable}
}

func (c *re2Compiler) alt(a, b re2Frag) re2Frag {
	if a.begin == 0 {
		return b
	}
	if b.begin == 0 {
		return a
	}
	id := c.alloc(1)
	if id < 0 {
		return re2Frag{}
	}
	c.inst[id] = re2Inst{op: re2Alt, out: a.begin, out1: b.begin}
	return re2Frag{uint32(id), c.appendList(a.end, b.end), a.nullable || b.nullable}
}

// loop is the Alt of Plus, Star and Quest: out loops (greedy) or out1 does (non-greedy).
func (c *re2Compiler) loop(a re2Frag, nongreedy bool) (uint32, re2Patch, bool) {
	id := c.alloc(1)
	if id < 0 {
		return 0, re2Patch{}, false
	}
	u := uint32(id)
	if nongreedy {
		c.inst[id] = re2Inst{op: re2Alt, out1: a.begin}
		return u, mk(u << 1), true
	}
	c.inst[id] = re2Inst{op: re2Alt, out: a.begin}
	return u, mk(u<<1 | 1), true
}

func (c *re2Compiler) plus(a re2Frag, ng bool) re2Frag {
	id, pl, ok := c.loop(a, ng)
	if !ok {
		return re2Frag{}
	}
	c.patch(a.end, id)
	return re2Frag{a.begin, pl, a.nullable}
}

func (c *re2Compiler) star(a re2Frag, ng bool) re2Frag {
	// A nullable operand is compiled as (a+)? (compile.cc Star).
	if a.nullable {
		return c.quest(c.plus(a, ng), ng)
	}
	id, pl, ok := c.loop(a, ng)
	if !ok {
		return re2Frag{}
	}
	c.patch(a.end, id)
	return re2Frag{id, pl, true}
}

func (c *re2Compiler) quest(a re2Frag, ng bool) re2Frag {
	if a.begin == 0 {
		return c.nop()
	}
	id, pl, ok := c.loop(a, ng)
	if !ok {
		return re2Frag{}
	}
	return re2Frag{id, c.appendList(pl, a.end), true}
}

func (c *re2Compiler) byteRange(lo, hi uint8, fold bool) re2Frag {
	id := c.alloc(1)
	if id < 0 {
		return re2Frag{}
	}
	c.inst[id] = re2Inst{op: re2ByteRange, lo: lo, hi: hi, fold: fold}
	return re2Frag{uint32(id), mk(uint32(id) << 1), false}
}

func (c *re2Compiler) nop() re2Frag {
	id := c.alloc(1)
	if id < 0 {
		return re2Frag{}
	}
	c.inst[id] = re2Inst{op: re2Nop}
	return re2Frag{uint32(id), mk(uint32(id) << 1), true}
}

func (c *re2Compiler) match() re2Frag {
	id := c.alloc(1)
	if id < 0 {
		return re2Frag{}
	}
	c.inst[id] = re2Inst{op: re2Match}
	return re2Frag{uint32(id), re2Patch{}, false}
}

func (c *re2Compiler) emptyWidth() re2Frag {
	id := c.alloc(1)
	if id < 0 {
		return re2Frag{}
	}
	c.inst[id] = re2Inst{op: re2EmptyWidth}
	return re2Frag{uint32(id), mk(uint32(id) << 1), true}
}

func (c *re2Compiler) capture(a re2Frag) re2Frag {
	if a.begin == 0 {
		return re2Frag{}
	}
	id := c.alloc(2)
	if id < 0 {
		return re2Frag{}
	}
	u := uint32(id)
	c.inst[id] = re2Inst{op: re2Capture, out: a.begin}
	c.inst[id+1] = re2Inst{op: re2Capture}
	c.patch(a.end, u+1)
	return re2Frag{u, mk((u + 1) << 1), a.nullable}
}

func (c *re2Compiler) dotStar() re2Frag { return c.star(c.byteRange(0x00, 0xff, false), true) }

// Rune ranges (compile.cc BeginRange .. EndRange).

func (c *re2Compiler) beginRange() {
	clear(c.cache)
	c.rangeFrag = re2Frag{}
}

func (c *re2Compiler) uncachedSuffix(lo, hi uint8, fold bool, next uint32) uint32 {
	f := c.byteRange(lo, hi, fold)
	if f.begin == 0 {
		return 0
	}
	if next != 0 {
		c.patch(f.end, next)
	} else {
		c.rangeFrag.end = c.appendList(c.rangeFrag.end, f.end)
	}
	return f.begin
}

func cacheKey(lo, hi uint8, fold bool, next uint32) uint64 {
	k := uint64(next)<<17 | uint64(lo)<<9 | uint64(hi)<<1
	if fold {
		k |= 1
	}
	return k
}

func (c *re2Compiler) cachedSuffix(lo, hi uint8, fold bool, next uint32) uint32 {
	k := cacheKey(lo, hi, fold, next)
	if id, ok := c.cache[k]; ok {
		return id
	}
	id := c.uncachedSuffix(lo, hi, fold, next)
	c.cache[k] = id
	return id
}

func (c *re2Compiler) isCached(id uint32) bool {
	in := c.inst[id]
	_, ok := c.cache[cacheKey(in.lo, in.hi, in.fold, in.out)]
	return ok
}

func (c *re2Compiler) addSuffix(id uint32) {
	if c.failed {
		return
	}
	if c.rangeFrag.begin == 0 {
		c.rangeFrag.begin = id
		return
	}
	c.rangeFrag.begin = c.addSuffixRecursive(c.rangeFrag.begin, id)
}

// addSuffixRecursive mirrors Compiler::AddSuffixRecursive: a trie over leading bytes.
func (c *re2Compiler) addSuffixRecursive(root, id uint32) uint32 {
	f, found := c.findByteRange(root, id)
	if !found {
		alt := c.alloc(1)
		if alt < 0 {
			return 0
		}
		c.inst[alt] = re2Inst{op: re2Alt, out: root, out1: id}
		return uint32(alt)
	}
	var br uint32
	switch {
	case f.end.head == 0:
		br = root
	case f.end.head&1 != 0:
		br = c.inst[f.begin].out1
	default:
		br = c.inst[f.begin].out
	}
	if c.isCached(br) {
		// A cached suffix is shared: clone the head.
		n := c.alloc(1)
		if n < 0 {
			return 0
		}
		in := c.inst[br]
		c.inst[n] = re2Inst{op: re2ByteRange, lo: in.lo, hi: in.hi, fold: in.fold, out: in.out}
		br = uint32(n)
		switch {
		case f.end.head == 0:
			root = br
		case f.end.head&1 != 0:
			c.inst[f.begin].out1 = br
		default:
			c.inst[f.begin].out = br
		}
	}
	out := c.inst[id].out
	if !c.isCached(id) {
		// The head is the last instruction allocated: freed.
		c.inst = c.inst[:len(c.inst)-1]
	}
	out = c.addSuffixRecursive(c.inst[br].out, out)
	if out == 0 {
		return 0
	}
	c.inst[br].out = out
	return root
}

func (c *re2Compiler) sameRange(a, b uint32) bool {
	x, y := c.inst[a], c.inst[b]
	return x.lo == y.lo && x.hi == y.hi && x.fold == y.fold
}

// findByteRange mirrors Compiler::FindByteRange (forward mode).
func (c *re2Compiler) findByteRange(root, id uint32) (re2Frag, bool) {
	if c.inst[root].op == re2ByteRange {
		if c.sameRange(root, id) {
			return re2Frag{begin: root}, true
		}
		return re2Frag{}, false
	}
	if c.inst[root].op == re2Alt && c.sameRange(c.inst[root].out1, id) {
		return re2Frag{begin: root, end: mk(root<<1 | 1)}, true
	}
	// A char class is sorted: in forward mode only the last added branch can match.
	return re2Frag{}, false
}

func (c *re2Compiler) add80to10ffff() {
	cont1 := c.uncachedSuffix(0x80, 0xbf, false, 0)
	c.addSuffix(c.uncachedSuffix(0xc2, 0xdf, false, cont1))
	cont2 := c.uncachedSuffix(0x80, 0xbf, false, cont1)
	c.addSuffix(c.uncachedSuffix(0xe0, 0xef, false, cont2))
	cont3 := c.uncachedSuffix(0x80, 0xbf, false, cont2)
	c.addSuffix(c.uncachedSuffix(0xf0, 0xf4, false, cont3))
}

func re2MaxRune(n int) rune {
	b := 7
	if n > 1 {
		b = 8 - (n + 1) + 6*(n-1)
	}
	return 1<<b - 1
}

// re2EncodeRune is RE2's runetochar: UTF-8 without Go's surrogate replacement.
func re2EncodeRune(r rune) []uint8 {
	switch {
	case r < 0x80:
		return []uint8{uint8(r)}
	case r < 0x800:
		return []uint8{0xc0 | uint8(r>>6), 0x80 | uint8(r)&0x3f}
	case r < 0x10000:
		return []uint8{0xe0 | uint8(r>>12), 0x80 | uint8(r>>6)&0x3f, 0x80 | uint8(r)&0x3f}
	}
	return []uint8{0xf0 | uint8(r>>18), 0x80 | uint8(r>>12)&0x3f, 0x80 | uint8(r>>6)&0x3f, 0x80 | uint8(r)&0x3f}
}

func (c *re2Compiler) addRuneRange(lo, hi rune, fold bool) {
	if lo > hi || c.failed {
		return
	}
	if lo == 0x80 && hi == 0x10ffff {
		c.add80to10ffff()
		return
	}
	for i := 1; i < 4; i++ { // split into same-length ranges
		if m := re2MaxRune(i); lo <= m && m < hi {
			c.addRuneRange(lo, m, fold)
			c.addRuneRange(m+1, hi, fold)
			return
		}
	}
	if hi < 0x80 {
		c.addSuffix(c.uncachedSuffix(uint8(lo), uint8(hi), fold, 0))
		return
	}
	for i := 1; i < 4; i++ { // split into ranges that agree on leading bytes
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				c.addRuneRange(lo, lo|m, fold)
				c.addRuneRange((lo|m)+1, hi, fold)
				return
			}
			if hi&m != m {
				c.addRuneRange(lo, hi&^m-1, fold)
				c.addRuneRange(hi&^m, hi, fold)
				return
			}
		}
	}
	ulo, uhi := re2EncodeRune(lo), re2EncodeRune(hi)
	n := len(ulo)
	var id uint32
	for i := n - 1; i >= 0; i-- {
		// Forward mode: cache the last continuation byte and inner byte ranges.
		if i == n-1 || (ulo[i] < uhi[i] && i != 0) {
			id = c.cachedSuffix(ulo[i], uhi[i], false, id)
		} else {
			id = c.uncachedSuffix(ulo[i], uhi[i], false, id)
		}
	}
	c.addSuffix(id)
}

// charClass compiles sorted, merged rune ranges (PostVisit kRegexpCharClass).
func (c *re2Compiler) charClass(ranges []rune) re2Frag {
	if len(ranges) == 0 {
		return re2Frag{}
	}
	in := func(r rune) bool {
		for i := 0; i < len(ranges); i += 2 {
			if ranges[i] <= r && r <= ranges[i+1] {
				return true
			}
		}
		return false
	}
	foldASCII := true // CharClass::FoldsASCII: A-Z and a-z have the same members
	for r := 'a'; r <= 'z'; r++ {
		if in(r) != in(r-'a'+'A') {
			foldASCII = false
			break
		}
	}
	c.beginRange()
	for i := 0; i < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if foldASCII && 'A' <= lo && hi <= 'Z' {
			continue
		}
		fold := foldASCII
		if (lo <= 'A' && 'z' <= hi) || hi < 'A' || 'z' < lo || ('Z' < lo && hi < 'a') {
			fold = false
		}
		c.addRuneRange(lo, hi, fold)
	}
	return c.rangeFrag
}

// literal compiles one rune; a case-folded rune is what RE2's parser makes of it: a
// folding byte for an ASCII letter whose only other case is ASCII, else a class of its folds.
func (c *re2Compiler) literal(r rune, fold bool) re2Frag {
	if fold {
		orbit := re2FoldOrbit(r)
		switch {
		case len(orbit) == 2 && 'A' <= orbit[0] && orbit[0] <= 'Z' && orbit[1] == orbit[0]+'a'-'A':
			return c.byteRange(uint8(orbit[1]), uint8(orbit[1]), true)
		case len(orbit) > 1:
			ranges := make([]rune, 0, 2*len(orbit))
			for _, o := range orbit {
				ranges = append(ranges, o, o)
			}
			return c.charClass(ranges)
		}
	}
	if r < 0x80 {
		return c.byteRange(uint8(r), uint8(r), false)
	}
	b := re2EncodeRune(r)
	f := c.byteRange(b[0], b[0], false)
	for _, x := range b[1:] {
		f = c.cat(f, c.byteRange(x, x, false))
	}
	return f
}

// walk compiles a simplified tree bottom-up (Compiler::PostVisit).
func (c *re2Compiler) walk(re *syntax.Regexp) re2Frag {
	if c.failed {
		return re2Frag{}
	}
	ng := re.Flags&syntax.NonGreedy != 0
	switch re.Op {
	case syntax.OpNoMatch:
		return re2Frag{}
	case syntax.OpEmptyMatch:
		return c.nop()
	case syntax.OpLiteral:
		if len(re.Rune) == 0 {
			return c.nop()
		}
		var f re2Frag
		for i, r := range re.Rune {
			f1 := c.literal(r, re.Flags&syntax.FoldCase != 0)
			if i == 0 {
				f = f1
			} else {
				f = c.cat(f, f1)
			}
		}
		return f
	case syntax.OpCharClass:
		return c.charClass(re.Rune)
	case syntax.OpAnyCharNotNL: // RE2 parses . as the class [^\n]
		return c.charClass([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune})
	case syntax.OpAnyChar:
		return c.charClass([]rune{0, unicode.MaxRune})
	case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return c.emptyWidth()
	case syntax.OpCapture:
		return c.capture(c.walk(re.Sub[0]))
	case syntax.OpStar:
		return c.star(c.walk(re.Sub[0]), ng)
	case syntax.OpPlus:
		return c.plus(c.walk(re.Sub[0]), ng)
	case syntax.OpQuest:
		return c.quest(c.walk(re.Sub[0]), ng)
	case syntax.OpConcat:
		if len(re.Sub) == 0 {
			return c.nop()
		}
		f := c.walk(re.Sub[0])
		for _, s := range re.Sub[1:] {
			f = c.cat(f, c.walk(s))
		}
		return f
	case syntax.OpAlternate:
		f := c.walk(re.Sub[0])
		for _, s := range re.Sub[1:] {
			f = c.alt(f, c.walk(s))
		}
		return f
	}
	// OpRepeat does not survive Simplify; anything else is not RE2.
	c.failed = true
	return re2Frag{}
}

// re2Prog is a compiled program being optimized and flattened (re2/prog.cc).
type re2Prog struct {
	inst                   []re2Inst
	start, startUnanchored uint32
}

func (p *re2Prog) skipNops(j uint32) uint32 {
	for j != 0 && p.inst[j].op == re2Nop {
		j = p.inst[j].out
	}
	return j
}

// optimize mirrors Prog::Optimize: Nops are skipped, and an Alt between a Match and a byte
// loop back to itself becomes an AltMatch (Flatten emits one more instruction for it).
func (p *re2Prog) optimize() {
	q := newWorkq(len(p.inst))
	q.add(p.start)
	for i := 0; i < len(q.list); i++ {
		ip := &p.inst[q.list[i]]
		ip.out = p.skipNops(ip.out)
		q.add(ip.out)
		if ip.op == re2Alt {
			ip.out1 = p.skipNops(ip.out1)
			q.add(ip.out1)
		}
	}
	q = newWorkq(len(p.inst))
	q.add(p.start)
	for i := 0; i < len(q.list); i++ {
		id := q.list[i]
		ip := &p.inst[id]
		q.add(ip.out)
		if ip.op != re2Alt {
			continue
		}
		q.add(ip.out1)
		j, k := p.inst[ip.out], p.inst[ip.out1]
		if j.op == re2ByteRange && j.out == id && j.lo == 0 && j.hi == 0xff && p.isMatch(ip.out1) ||
			p.isMatch(ip.out) && k.op == re2ByteRange && k.out == id && k.lo == 0 && k.hi == 0xff {
			ip.op = re2AltMatch
		}
	}
}

func (p *re2Prog) isMatch(id uint32) bool {
	for {
		switch p.inst[id].op {
		case re2Capture, re2Nop:
			id = p.inst[id].out
		case re2Match:
			return true
		default:
			return false
		}
	}
}

// workq is an insertion-ordered set of instruction ids without 0 (prog.cc Workq/AddToQueue).
type workq struct {
	list []uint32
	seen []bool
}

func newWorkq(n int) *workq { return &workq{seen: make([]bool, n)} }

func (q *workq) add(id uint32) {
	if id != 0 && !q.seen[id] {
		q.seen[id] = true
		q.list = append(q.list, id)
	}
}

// flatten mirrors Prog::Flatten and returns the flattened size.
func (p *re2Prog) flatten() int {
	n := len(p.inst)
	rootIdx := make([]int, n) // rootmap: id -> 1+order, 0 when not a root
	var roots []uint32
	addRoot := func(id uint32) {
		if rootIdx[id] == 0 {
			roots = append(roots, id)
			rootIdx[id] = len(roots)
		}
	}
	preds := make([][]uint32, n)
	addRoot(0)
	addRoot(p.startUnanchored)
	addRoot(p.start)

	// MarkSuccessors.
	seen := make([]bool, n)
	stk := []uint32{p.startUnanchored}
	for len(stk) > 0 {
		id := stk[len(stk)-1]
		stk = stk[:len(stk)-1]
		for !seen[id] {
			seen[id] = true
			ip := p.inst[id]
			switch ip.op {
			case re2Alt, re2AltMatch:
				preds[ip.out] = append(preds[ip.out], id)
				preds[ip.out1] = append(preds[ip.out1], id)
				stk = append(stk, ip.out1)
				id = ip.out
				continue
			case re2ByteRange, re2Capture, re2EmptyWidth:
				addRoot(ip.out)
				id = ip.out
				continue
			case re2Nop:
				id = ip.out
				continue
			}
			break
		}
	}

	// reach is the set of instructions reachable from root by epsilon moves, stopping at other
	// roots (they are included, not crossed).
	mark := make([]int, n)
	gen := 0
	reach := func(root uint32, visit func(id uint32, other bool)) []uint32 {
		gen++
		var got []uint32
		stk := []uint32{root}
		for len(stk) > 0 {
			id := stk[len(stk)-1]
			stk = stk[:len(stk)-1]
			for mark[id] != gen {
				mark[id] = gen
				got = append(got, id)
				if id != root && rootIdx[id] != 0 {
					visit(id, true)
					break
				}
				ip := p.inst[id]
				visit(id, false)
				if ip.op == re2Alt || ip.op == re2AltMatch {
					stk = append(stk, ip.out1)
					id = ip.out
					continue
				}
				if ip.op == re2Nop {
					id = ip.out
					continue
				}
				break
			}
		}
		return got
	}

	// MarkDominator, over the roots known after MarkSuccessors from the highest id down,
	// skipping the lowest (Fail) and the two starts.
	sorted := append([]uint32(nil), roots...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for i := len(sorted) - 1; i > 0; i-- {
		root := sorted[i]
		if root == p.startUnanchored || root == p.start {
			continue
		}
		got := reach(root, func(uint32, bool) {})
		for _, id := range got {
			for _, pred := range preds[id] {
				if mark[pred] != gen {
					addRoot(id)
				}
			}
		}
	}

	// EmitList: one instruction per reachable non-epsilon instruction, one Nop per other root
	// reached, and one more for each AltMatch.
	size := 0
	for _, root := range roots {
		reach(root, func(id uint32, other bool) {
			if other {
				size++
				return
			}
			switch p.inst[id].op {
			case re2AltMatch, re2ByteRange, re2Capture, re2EmptyWidth, re2Match, re2Fail:
				size++
			}
		})
	}
	return size
}

// re2ProgramSizeLimit is Envoy's default re2.max_program_size.error_level
// (source/common/common/regex.cc CompiledGoogleReMatcher::CompiledGoogleReMatcher).
const re2ProgramSizeLimit = 100

// checkRE2 refuses a regex Envoy would refuse: one RE2 cannot parse, or whose program size
// is above the error level.
func checkRE2(pattern string) error {
	n, err := RE2ProgramSize(pattern)
	if errors.Is(err, errRE2TooLarge) {
		return fmt.Errorf("regex %q compiles to more than %d RE2 instructions; Envoy refuses programs above %d (re2.max_program_size.error_level)", pattern, re2MaxCompile, re2ProgramSizeLimit)
	}
	if err != nil {
		return fmt.Errorf("regex %q: %v", pattern, err)
	}
	if n > re2ProgramSizeLimit {
		return fmt.Errorf("regex %q has RE2 program size %d; Envoy refuses programs above %d (re2.max_program_size.error_level): shorten it, or use fewer variables and character classes", pattern, n, re2ProgramSizeLimit)
	}
	return nil
}
