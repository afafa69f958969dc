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
// 1,000 random patterns built to hit every construct, 38 hit this or a like difference (36
// undercounted by up to 23 instructions, 22%; 2 overcounted) and every other size was exact
// (testdata/re2_program_sizes.tsv, sizes from RE2 itself, libre2 2022-06-01;
// TestRE2ProgramSizeMatchesRE2).

import (
	"errors"
	"fmt"
	"regexp/syntax"
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
