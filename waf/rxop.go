package waf

import (
	"hash/maphash"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// rxOperatorName is the gateway's @rx: Coraza's @rx semantics (RE2 with (?sm), up to 10
// capture fields) behind a literal prefilter that is sound by construction (rxfilter.go).
// The CRS rules are loaded with @rx rewritten to it. Coraza's own SecRxPreFilter is not
// used: in Coraza v3.8.1 it drops real matches (CRS tests 942220-2 and 932311-7 fail
// with it, see crs-overrides.yaml).
const rxOperatorName = "gwrx"

var registerOnce sync.Once

func registerOperators() {
	registerOnce.Do(func() {
		plugins.RegisterOperator(rxOperatorName, newGatewayRx)
		plugins.RegisterOperator(screenOperatorName, newScreenOp)
		plugins.RegisterOperator(captureOperatorName, newCaptureOp)
		plugins.RegisterOperator(deadlineOperatorName, newDeadlineOp)
	})
}

// compiledRx is shared by every rule (in every WAF) with the same pattern.
type compiledRx struct {
	re     *regexp.Regexp
	filter *rxFilter
}

var rxCache sync.Map // pattern -> *compiledRx

type gatewayRx struct{ *compiledRx }

func newGatewayRx(opts plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	data := "(?sm)" + opts.Arguments
	if c, ok := rxCache.Load(data); ok {
		return gatewayRx{c.(*compiledRx)}, nil
	}
	re, err := regexp.Compile(data)
	if err != nil {
		return nil, err
	}
	c, _ := rxCache.LoadOrStore(data, &compiledRx{re: re, filter: newRxFilter(data)})
	return gatewayRx{c.(*compiledRx)}, nil
}

// Evaluate is Coraza's @rx evaluation with the prefilter in front.
func (o gatewayRx) Evaluate(tx plugintypes.TransactionState, value string) bool {
	if o.filter != nil && !o.filter.mayMatch(value) {
		return false
	}
	// Most evaluations do not match: answer those with MatchString, which skips the
	// submatch bookkeeping, and pay for captures only on a match. Short values that
	// did not match are remembered (header values, cookie names and common arguments
	// repeat from request to request).
	cacheable := len(value) <= maxCachedValue
	if cacheable && noMatch.has(o.compiledRx, value) {
		return false
	}
	if !o.re.MatchString(value) {
		if cacheable {
			noMatch.add(o.compiledRx, value)
		}
		return false
	}
	if !tx.Capturing() {
		return true
	}
	m := o.re.FindStringSubmatchIndex(value)
	if m == nil {
		return false
	}
	for i := 0; i < len(m)/2 && i < 9; i++ {
		if m[2*i] >= 0 {
			tx.CaptureField(i, value[m[2*i]:m[2*i+1]])
		} else {
			tx.CaptureField(i, "")
		}
	}
	return true
}

// maxCachedValue is the longest value whose no-match result is cached.
const maxCachedValue = 128

// noMatchCache remembers (pattern, value) pairs that did not match. It is sharded and
// bounded: a full shard is emptied (at most noMatchShards*noMatchShardSize entries, a few
// MiB). Only the absence of a match is cached: a match always runs the expression, so
// captures are always fresh.
type noMatchCache struct {
	seed   maphash.Seed
	shards [noMatchShards]noMatchShard
}

const (
	noMatchShards    = 32
	noMatchShardSize = 2048
)

type noMatchKey struct {
	rx    *compiledRx
	value string
}

type noMatchShard struct {
	mu sync.Mutex
	m  map[noMatchKey]struct{}
}

var noMatch = &noMatchCache{seed: maphash.MakeSeed()}

func (c *noMatchCache) shard(rx *compiledRx, value string) *noMatchShard {
	return &c.shards[maphash.String(c.seed, value)%noMatchShards]
}

func (c *noMatchCache) has(rx *compiledRx, value string) bool {
	sh := c.shard(rx, value)
	sh.mu.Lock()
	_, ok := sh.m[noMatchKey{rx, value}]
	sh.mu.Unlock()
	return ok
}

func (c *noMatchCache) add(rx *compiledRx, value string) {
	sh := c.shard(rx, value)
	sh.mu.Lock()
	if sh.m == nil || len(sh.m) >= noMatchShardSize {
		sh.m = make(map[noMatchKey]struct{}, noMatchShardSize/4)
	}
	sh.m[noMatchKey{rx, strings.Clone(value)}] = struct{}{}
	sh.mu.Unlock()
}

// usesArbitraryBytes mirrors Coraza's @rx choice of engine: when the pattern's \xNN
// escapes, decoded as bytes, are not valid UTF-8, Coraza matches it with a binary regexp
// engine, so such rules keep Coraza's @rx.
func usesArbitraryBytes(expr string) bool {
	decoded := make([]byte, 0, len(expr))
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if c != '\\' {
			decoded = append(decoded, c)
			continue
		}
		if i+3 >= len(expr) {
			decoded = append(decoded, expr[i:]...)
			break
		}
		if expr[i+1] != 'x' {
			decoded = append(decoded, c)
			continue
		}
		sub, advance := expr[i:], 3
		if len(sub) >= 6 && sub[2] == '{' {
			if end := strings.IndexByte(sub, '}'); end != -1 {
				sub = `\x` + sub[3:end]
				advance = end
			}
		}
		v, multibyte, _, err := strconv.UnquoteChar(sub, 0)
		if err != nil || multibyte {
			decoded = append(decoded, c)
			continue
		}
		decoded = append(decoded, byte(v))
		i += advance
	}
	return !utf8.Valid(decoded)
}
