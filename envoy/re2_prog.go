package envoy

// RE2's program optimizer and flattener (google/re2 re2/prog.cc Optimize, Flatten), whose
// output size is RE2::ProgramSize (see re2progsize.go).

import (
	"sort"
)

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
