package envoy

// The parse-tree steps of RE2's program size (see re2progsize.go): what RE2::Init,
// RE2's parser and Regexp::Simplify do to a pattern before it is compiled, mirrored on Go's
// regexp/syntax tree (google/re2 re2/regexp.cc, parse.cc, simplify.cc, compile.cc).

import (
	"regexp/syntax"
	"sort"
	"unicode"
)

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

// re2SimplifyRepeat mirrors SimplifyWalker::SimplifyRepeat: x{2,} is xx+, x{2,5} is
// xx(x(x(x)?)?)?, built with the squashing constructors. Newer RE2 also squashes a repeated
// empty-width assertion (x{2,5} of ^ or \b is x{1,1}); RE2 2022-06-01 does not and
// compiles every copy, so (?:^){1,3} is 6 instructions there, 2 with the squash. The count
// here is the larger, what the older RE2 refuses: either may be on the other end.
func re2SimplifyRepeat(x *syntax.Regexp, lo, hi int, f syntax.Flags) *syntax.Regexp {
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
