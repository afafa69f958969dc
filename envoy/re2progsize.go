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
// is left, and it can count low: Go's parser merges single-character alternatives into a class
// as it reads each '|', where RE2 (parse.cc DoVerticalBar, FactorAlternation) factors common
// prefixes first and keeps the empty alternatives that leaves, so a|a|b is 5 instructions here
// and 7 in RE2, and under a repetition the gap multiplies ((?:a|a|b){45}: 47 here, 137 in RE2;
// twenty case-folded one-rune alternatives: 6 here, 34). Route patterns we generate never have
// such alternations, and the sizes of the patterns in testdata/re2_program_sizes.tsv (from RE2
// itself, libre2 2022-06-01; TestRE2ProgramSizeMatchesRE2) are exact but for the 38 lines marked
// there. Closing it needs a parser that builds RE2's tree; Go's cannot be told to.

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"strings"
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
	if err := re2NamedGroupSyntax(pattern); err != nil {
		return 0, err
	}
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

// re2ProgramSizeLimit is Envoy's default re2.max_program_size.error_level
// (source/common/common/regex.cc CompiledGoogleReMatcher::CompiledGoogleReMatcher).
const re2ProgramSizeLimit = 100

// checkRE2 refuses a regex Envoy would refuse: one RE2 cannot parse, or whose program size
// is above the error level.
func checkRE2(pattern string) error {
	n, err := RE2ProgramSize(pattern)
	if errors.Is(err, errRE2TooLarge) {
		return fmt.Errorf("regex %q expands to more than %d RE2 instructions; Envoy refuses programs above %d (re2.max_program_size.error_level)", pattern, re2MaxCompile, re2ProgramSizeLimit)
	}
	if err != nil {
		return fmt.Errorf("regex %q: %v", pattern, err)
	}
	if n > re2ProgramSizeLimit {
		return fmt.Errorf("regex %q has RE2 program size %d; Envoy refuses programs above %d (re2.max_program_size.error_level): shorten it, or use fewer variables and character classes", pattern, n, re2ProgramSizeLimit)
	}
	return nil
}

// re2NamedGroupSyntax refuses (?<name>...): Go's parser takes it, but RE2 before 2023-06
// (parse.cc, Regexp::ParseState::ParsePerlFlags, which then knew only "(?P<") refuses it,
// and the Envoy on the other end may be built with such an RE2. (?P<name>...) works with
// every RE2. Escapes and character classes are skipped, where "(?<" is not a group.
func re2NamedGroupSyntax(pattern string) error {
	inClass := false
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; {
		case c == '\\':
			i++
		case inClass:
			inClass = c != ']'
		case c == '[':
			inClass = true
			// A ']' (after an optional '^') right after '[' is a literal member.
			if i+1 < len(pattern) && pattern[i+1] == '^' {
				i++
			}
			if i+1 < len(pattern) && pattern[i+1] == ']' {
				i++
			}
		case c == '(' && strings.HasPrefix(pattern[i:], "(?<"):
			return errors.New("named groups must be written (?P<name>...): RE2 before 2023 refuses (?<name>...)")
		}
	}
	return nil
}
