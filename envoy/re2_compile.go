package envoy

// RE2's compiler (google/re2 re2/compile.cc), mirrored instruction by instruction for the
// program size (see re2progsize.go).

import (
	"regexp/syntax"
	"unicode"
)

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
