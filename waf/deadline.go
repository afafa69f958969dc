package waf

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
)

// Deadlines. Envoy gives up on a Check after the route's ext_authz timeout (the gRPC
// deadline of the call, which the engine passes to Inspect as ctx) and answers the client
// itself; WAF work past that point is wasted, and under load it delays every other check.
// Coraza never looks at the context it is given (v3.8.1 keeps it only for logging), and
// evaluates the rules of a phase one after another without a way to stop, so the WAF
// checks the context itself:
//   - before each phase and after the body, in Inspect (free);
//   - at the start of each request phase, in the screen rule (screen.go);
//   - inside the request body phase, at checkpoints: one rule of ours before the CRS
//     attack files 930 (LFI, the first), 932 (RCE), 941 (XSS) and 942 (SQLi), the largest,
//     and before the blocking evaluation (949). The body phase of a large form is where the
//     time goes (a 128 KiB form at paranoia 2: ~1.7 s), and the attack files are where it
//     goes within the phase. Each checkpoint is one rule evaluation on every request, so
//     there are five, not one per file.
//
// A checkpoint that finds the context done removes every rule from the transaction (the
// per-transaction removal ctl:ruleRemoveById uses, for a range of ids): Coraza then runs
// through the rest of the phase without evaluating anything, and Inspect answers with an
// unavailable verdict (503, Err set), never with an allow.
//
// The checkpoints are plain rules inserted between CRS files, so they count for skip:N:
// no CRS skip crosses a file, but a custom rule loaded before the CRS could skip into it,
// so a ruleset whose custom rules use skip:N has no checkpoints (the phase boundaries
// still apply).

// deadlineOperatorName is the operator of the checkpoint rules.
const deadlineOperatorName = "gwdeadline"

// checkpointRuleID is the id of the first checkpoint rule; the others follow.
const checkpointRuleID = 8999910

// checkpointBefore are the CRS files a checkpoint precedes (by their number).
var checkpointBefore = []string{"930", "932", "941", "942", "949"}

// withCheckpoints inserts a checkpoint rule before each CRS file of checkpointBefore in
// the CRS text (files start with "# --- REQUEST-<n>-", crs.go).
func withCheckpoints(crs string) string {
	var b strings.Builder
	b.Grow(len(crs) + len(checkpointBefore)*160)
	rest := crs
	for i, n := range checkpointBefore {
		marker := "# --- REQUEST-" + n + "-"
		j := strings.Index(rest, marker)
		if j < 0 {
			continue
		}
		b.WriteString(rest[:j])
		fmt.Fprintf(&b, "SecRule REQUEST_METHOD \"@%s\" \"id:%d,phase:2,pass,nolog,noauditlog,t:none\"\n",
			deadlineOperatorName, checkpointRuleID+i)
		rest = rest[j:]
	}
	b.WriteString(rest)
	return b.String()
}

// running maps a transaction being inspected under a context that can end to its guard.
// Keys are the transaction (types.Transaction and the operators' TransactionState hold the
// same pointer, so the interface values compare equal).
var running sync.Map

// txGuard is the deadline state of one transaction. Only the goroutine running the
// transaction touches stopped.
type txGuard struct {
	ctx     context.Context
	key     any
	stopped bool
	err     error // the context's error once stopped
}

// guard registers tx under ctx; release must be called when the transaction ends. A
// context that can never end (Background, in tests and benchmarks) registers nothing.
func guard(ctx context.Context, tx types.Transaction) *txGuard {
	g := &txGuard{ctx: ctx}
	if ctx.Done() != nil {
		g.key = any(tx)
		running.Store(g.key, g)
	}
	return g
}

func (g *txGuard) release() {
	if g.key != nil {
		running.Delete(g.key)
	}
}

// expired reports whether the request's context is done, and remembers it.
func (g *txGuard) expired() bool {
	if !g.stopped {
		if err := g.ctx.Err(); err != nil {
			g.stopped, g.err = true, err
		}
	}
	return g.stopped
}

// ruleRangeRemover is Coraza's transaction: RemoveRuleByIDRange (what
// ctl:ruleRemoveById=<from>-<to> calls) is not in the public interface.
type ruleRangeRemover interface {
	RemoveRuleByIDRange(start, end int)
}

// stopIfExpired is the checkpoint: when the transaction's context is done, it removes
// every rule from the transaction and reports true.
func stopIfExpired(tx plugintypes.TransactionState) bool {
	v, ok := running.Load(any(tx))
	if !ok {
		return false
	}
	g := v.(*txGuard)
	if !g.expired() {
		return false
	}
	if rm, ok := tx.(ruleRangeRemover); ok {
		rm.RemoveRuleByIDRange(math.MinInt, math.MaxInt)
	}
	return true
}

// deadlineOp is the operator of the checkpoint rules; it never matches.
type deadlineOp struct{}

func newDeadlineOp(plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	return deadlineOp{}, nil
}

func (deadlineOp) Evaluate(tx plugintypes.TransactionState, _ string) bool {
	stopIfExpired(tx)
	return false
}
