package ratelimit

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions tune the Redis store. Zero values take the defaults.
type RedisOptions struct {
	// Workers is the number of pipelines in flight at once (default 2; 1 and 2 measure
	// alike over gRPC on 2 cores, see e2e/ratelimitref BenchmarkRatios and
	// BenchmarkRedisStoreModes).
	Workers int
	// MaxBatch caps the calls sent in one pipeline (default 256).
	MaxBatch int
	// Window, when positive, waits that long for more calls before sending a pipeline.
	// Zero (the default) gathers adaptively: a caller about to send, when other calls are
	// in flight, first yields its processor once so goroutines ready to call Eval (gRPC
	// handlers) queue and ride the same pipeline; a lone caller sends at once. Negative
	// sends at once, always (calls still queue while pipelines are in flight).
	Window time.Duration
	// Timeout caps how long one pipeline may wait for Redis (default 2s). Within it, a
	// pipeline waits as long as the most patient caller in its batch (the latest context
	// deadline; a caller without one counts as Timeout): a slow but healthy Redis is
	// waited for while someone still wants the answer, and each caller gives up, and
	// gets its limit's fail mode, at its own deadline, not at a fixed one shared by the
	// batch. Scripts are never re-sent after a send that may have reached Redis: they
	// charge counters, and a second run would charge twice.
	Timeout time.Duration
}

// RedisStore keeps counters in Redis (single node, Sentinel or Cluster through go-redis's
// UniversalClient). Each group is evaluated by a Lua script (loaded once, reloaded after
// NOSCRIPT), except the most common one, one fixed-window check of cost 1, which is sent as
// native commands (see fixedNative); all calls that arrive together go out in one pipeline.
//
// Batching is flat combining: a caller that finds fewer than Workers pipelines in flight
// sends the queue itself (its own call included) with no hand-off to another goroutine;
// callers that arrive meanwhile queue, and whoever finishes a pipeline sends the next batch.
type RedisStore struct {
	client redis.UniversalClient
	sha    string
	// cluster: calls carry one group each (slots); otherwise a call carries many groups.
	cluster bool
	opts    RedisOptions
	loadMu  sync.Mutex

	// active counts calls inside Eval; batches counts pipelines by size (see BatchSizes).
	active  atomic.Int64
	batches [batchBuckets]atomic.Uint64

	late sync.WaitGroup // give-backs of abandoned calls' units (Close waits for them)

	mu      sync.Mutex
	queue   []*redisOp
	running int // pipelines being sent
	closed  bool
	idle    sync.Cond // signalled when running drops to 0 (Close waits)
}

type redisOp struct {
	ctx    context.Context
	now    int64
	groups [][]Check
	res    [][]Result
	res1   [1][]Result // res of a call of one group
	err    error
	done   chan struct{}
	// state: opPending until the pipeline claims the answer for the caller (opAnswered) or
	// the caller gives up first (opAbandoned): extra units charged for an abandoned call
	// are refunded (nobody holds them).
	state atomic.Int32
}

// opPool recycles the ops their callers took the answer of (an abandoned op is never
// recycled: its pipeline may still hold it).
var opPool = sync.Pool{New: func() any { return &redisOp{done: make(chan struct{}, 1)} }}

// answer returns op's answer to its caller and recycles op (the pipeline is done with it).
func (op *redisOp) answer() ([][]Result, error) {
	res, err := op.res, op.err
	if len(res) == 1 && &res[0] == &op.res1[0] {
		res = [][]Result{res[0]} // res1 is recycled with op
	}
	*op = redisOp{done: op.done}
	opPool.Put(op)
	return res, err
}

const (
	opPending int32 = iota
	opAnswered
	opAbandoned
)

var (
	errStoreClosed = errors.New("ratelimit: store closed")
	// errGroupFailed: the script failed on one of the request's groups (Redis refused a
	// command on one of its keys); the request gets its limits' fail modes.
	errGroupFailed = errors.New("ratelimit: the Redis script failed on this request's counters")
)

// batchBuckets: pipelines of 1, 2, 3–4, 5–8, …, 129–256 calls.
const batchBuckets = 9

// BatchSizes returns how many pipelines this store has sent by number of calls carried:
// element i counts pipelines of 1 call (i = 0) or of 2^(i-1)+1 … 2^i calls (the last
// element also counts larger ones, when MaxBatch is above 256).
func (s *RedisStore) BatchSizes() []uint64 {
	out := make([]uint64, batchBuckets)
	for i := range out {
		out[i] = s.batches[i].Load()
	}
	return out
}

func (s *RedisStore) countBatch(n int) {
	i := 0
	if n > 1 {
		i = min(bits.Len(uint(n-1)), batchBuckets-1)
	}
	s.batches[i].Add(1)
}

// NewRedisStore returns a store over client. It does not contact Redis: a store created
// while Redis is down answers with errors (fail open or closed per limit) until Redis is
// back.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) *RedisStore {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	s := &RedisStore{client: client, sha: scriptSHA(groupScript), opts: opts}
	s.idle.L = &s.mu
	_, s.cluster = client.(*redis.ClusterClient)
	return s
}

// Name returns "redis".
func (s *RedisStore) Name() string { return "redis" }

// Client returns the underlying client.
func (s *RedisStore) Client() redis.UniversalClient { return s.client }

// Close fails queued calls, waits for pipelines in flight and closes the client.
func (s *RedisStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, op := range s.queue {
		op.err = errStoreClosed
		op.done <- struct{}{}
	}
	s.queue = nil
	for s.running > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
	s.late.Wait()
	return s.client.Close()
}

// Eval queues the call and, when a pipeline slot is free, sends the queue itself; then
// waits for its answer.
func (s *RedisStore) Eval(ctx context.Context, now int64, groups [][]Check) ([][]Result, error) {
	op := opPool.Get().(*redisOp)
	op.ctx, op.now, op.groups = ctx, now, groups
	s.active.Add(1)
	defer s.active.Add(-1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStoreClosed
	}
	s.queue = append(s.queue, op)
	lead := s.running < s.opts.Workers
	if lead {
		s.running++
	}
	s.mu.Unlock()
	if lead {
		if chargesExtra(op) {
			// A call that asks for extra units is sent by another goroutine: its pipeline may
			// outlive this caller's deadline (see run), the caller must not.
			go s.send(nil)
		} else {
			s.send(op)
		}
	}
	select {
	case <-op.done:
		return op.answer()
	case <-ctx.Done():
		if op.state.CompareAndSwap(opPending, opAbandoned) {
			return nil, ctx.Err()
		}
		<-op.done // answered meanwhile: take the answer (it may carry extra units)
		return op.answer()
	}
}

// send holds a pipeline slot: it sends one batch from the queue, then, while more calls
// are queued, hands the slot to a goroutine that keeps sending (so the caller that led
// the batch gets its answer without waiting for later ones). lead is that caller (nil on
// a goroutine of its own): when a batch-mate waits longer than it (see outlives), the batch
// goes to a goroutine of its own too, and the caller waits for its answer or its deadline.
func (s *RedisStore) send(lead *redisOp) {
	if lead != nil && s.opts.Window > 0 {
		go s.send(nil) // the wait for more calls is not the caller's to sit through
		return
	}
	for {
		if s.opts.Window > 0 {
			time.Sleep(s.opts.Window)
		} else if s.opts.Window == 0 && s.active.Load() > 1 {
			// Other calls are in flight: let the goroutines that are ready to run (gRPC
			// handlers about to call Eval) queue first, so they ride this pipeline rather
			// than each paying a round trip. A lone caller never waits.
			runtime.Gosched()
		}
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.release()
			s.mu.Unlock()
			return
		}
		n := min(len(s.queue), s.opts.MaxBatch)
		batch := make([]*redisOp, n)
		copy(batch, s.queue)
		rest := copy(s.queue, s.queue[n:])
		clear(s.queue[rest:])
		s.queue = s.queue[:rest]
		s.mu.Unlock()
		s.countBatch(n)
		if lead != nil && outlives(batch, lead) {
			go func() {
				s.run(batch)
				s.send(nil)
			}()
			return
		}
		s.run(batch)
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.release()
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if lead != nil {
			go s.send(nil)
			return
		}
	}
}

// leadSlack is how much later than the caller that sends a batch itself the batch may end:
// batch-mates that arrive together have deadlines microseconds apart.
const leadSlack = time.Millisecond

// outlives reports whether a call of batch would keep its pipeline waiting past lead's
// deadline (plus leadSlack): a later deadline, none (the store's timeout), or units to
// charge extra (their pipeline waits for the reply, see run).
func outlives(batch []*redisOp, lead *redisOp) bool {
	ld, ok := lead.ctx.Deadline()
	if !ok {
		return false // the caller itself waits up to the store's timeout
	}
	for _, op := range batch {
		if op == lead {
			continue
		}
		if chargesExtra(op) {
			return true
		}
		if d, ok := op.ctx.Deadline(); !ok || d.After(ld.Add(leadSlack)) {
			return true
		}
	}
	return false
}

// release gives a pipeline slot back (mu held).
func (s *RedisStore) release() {
	s.running--
	if s.running == 0 {
		s.idle.Broadcast()
	}
}

// chargesExtra reports whether op asks Redis for extra units (Check.Extra).
func chargesExtra(op *redisOp) bool {
	for _, g := range op.groups {
		if len(g) == 1 && g[0].Extra > 0 {
			return true
		}
	}
	return false
}

// redisCall is one EVALSHA of the group script: one group (Redis Cluster), or on a
// non-cluster Redis many groups of the batch.
type redisCall struct {
	members []callMember
	sha     string
	keys    []string
	args    []any
	cmd     *redis.Cmd
}

// nativeCall is a fixedNative group: its SET NX PX and INCRBY.
type nativeCall struct {
	callMember
	// The commands live in the batch's array of natives (no allocation of their own).
	set  noRetryBool
	incr noRetryInt
}

// fixedNative reports whether group g goes out as native commands instead of a script: one
// fixed-window check of cost 1, the most common group, possibly with extra units to charge
// (Check.Extra). It is sent as SET key 0 NX PX ttl (creates the counter with the expiry the
// scripts give it and does nothing once it exists; sent first, so a counter never lives
// without an expiry, even if the connection drops between the two) and INCRBY key
// 1+extra: Redis runs them several times cheaper than the same work in Lua (redis.call and
// the script call itself cost more than the commands).
// Unlike the scripts it charges first and decides on the reply: the units over the limit
// (all of them when the check is denied, the extra units that do not fit when it admits) are
// taken back before the batch is answered, so a caller that follows sees the exact count,
// and the answer is the one the scripts give. With cost 1 the counter only goes past the
// limit meanwhile when it has reached it (denied) or when this check takes the last units
// (admitted): a check that runs in between would be denied after the give-back as well.
// Only a check of cost 0 (it admits at the limit) that runs in between is denied wrongly;
// denials are rare on the hot path: an over-limit answer is cached locally until its reset.
func fixedNative(g []Check) bool {
	return len(g) == 1 && g[0].Alg == AlgFixedWindow && g[0].Cost == 1
}

// namedElsewhere reports whether another group of the same request names the counter of
// group gi (a fixedNative group). Native commands run before the batch's scripts, so such a
// group goes to the script with the others: a request's groups are decided in their order,
// as the memory store decides them.
func namedElsewhere(groups [][]Check, gi int) bool {
	if len(groups) == 1 {
		return false
	}
	key := groups[gi][0].Key
	for gj, g := range groups {
		if gj == gi || fixedNative(g) { // natives run in their order among themselves
			continue
		}
		for i := range g {
			if g[i].Key == key {
				return true
			}
		}
	}
	return false
}

// nativeAmount is what a fixedNative check charges with its INCRBY: its cost, 1, and the
// extra units it asks for.
func nativeAmount(c *Check) int64 {
	return 1 + int64(min(c.Extra, math.MaxInt32))
}

// nativeResult is the answer to a fixedNative check whose INCRBY returned v, and the units
// to take back.
func nativeResult(c *Check, now, v int64) (r Result, back int64) {
	limit := int64(min(c.Limit, math.MaxInt64/2))
	a := nativeAmount(c)
	const cost = 1
	prior := v - a
	r.Reset = c.WindowEnd - now
	if prior+cost > limit {
		if prior < limit {
			r.Remaining = uint64(limit - prior)
		}
		r.RetryAfter = r.Reset
		return r, a
	}
	granted := min(a-cost, limit-prior-cost)
	r.Allowed, r.Extra = true, uint64(granted)
	r.Remaining = uint64(limit - prior - cost - granted)
	return r, a - cost - granted
}

// callMember is one group carried by a call.
type callMember struct {
	op *redisOp
	gi int
}

// Limits of one multi-group call, so a huge batch does not stall Redis in one script.
const (
	maxGroupsPerCall = 64
	maxKeysPerCall   = 256
)

func scriptSHA(src string) string {
	sum := sha1.Sum([]byte(src))
	return hex.EncodeToString(sum[:])
}

// build turns the batch into calls: fixedNative groups into native calls, the others into
// script calls. On a Redis Cluster each group is its own call (its keys share one slot,
// different groups usually do not); elsewhere groups are packed into group-script calls of
// up to maxGroupsPerCall groups.
func (s *RedisStore) build(batch []*redisOp) ([]redisCall, []nativeCall) {
	var calls []redisCall
	var natives []nativeCall
	if s.cluster {
		for _, op := range batch {
			for gi, g := range op.groups {
				if fixedNative(g) && !namedElsewhere(op.groups, gi) {
					natives = append(natives, nativeCall{callMember: callMember{op, gi}})
					continue
				}
				call := redisCall{sha: s.sha, args: []any{1}}
				call.add(op, gi)
				calls = append(calls, call)
			}
		}
		return calls, natives
	}
	cur := -1
	for _, op := range batch {
		for gi, g := range op.groups {
			if fixedNative(g) && !namedElsewhere(op.groups, gi) {
				if natives == nil {
					natives = make([]nativeCall, 0, len(batch))
				}
				natives = append(natives, nativeCall{callMember: callMember{op, gi}})
				continue
			}
			if cur < 0 || len(calls[cur].members) >= maxGroupsPerCall || len(calls[cur].keys) >= maxKeysPerCall {
				calls = append(calls, redisCall{sha: s.sha, args: []any{0}})
				cur = len(calls) - 1
			}
			c := &calls[cur]
			c.add(op, gi)
			c.args[0] = len(c.members)
		}
	}
	return calls, natives
}

func (c *redisCall) add(op *redisOp, gi int) {
	g := op.groups[gi]
	c.members = append(c.members, callMember{op, gi})
	c.args = append(c.args, op.now, len(g))
	for i := range g {
		ch := &g[i]
		c.keys = append(c.keys, ch.Key)
		c.args = append(c.args, string(rune(ch.Alg)), ch.Limit, ch.Period, ch.Burst, ch.WindowEnd, ch.Cost)
	}
}

// run sends one pipeline for the batch and hands out the answers. Calls whose caller has already given up are answered with its context error and
// not sent (their counters are not charged for a request whose caller applied the fail
// mode). The pipeline's deadline is the latest of the callers' (see RedisOptions.Timeout).
func (s *RedisStore) run(batch []*redisOp) {
	start := time.Now()
	limit := start.Add(s.opts.Timeout)
	var deadline time.Time
	live := batch[:0] // batch is this pipeline's own slice
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			op.done <- struct{}{}
			continue
		}
		d, ok := op.ctx.Deadline()
		if !ok || d.After(limit) || chargesExtra(op) {
			// A call that asks for extra units waits for its answer whether its caller does or
			// not: the units are refunded when nobody takes them, which needs the reply. (A
			// caller that sends a batch itself hands it to a goroutine when it holds such a
			// call, see outlives.)
			d = limit
		}
		if d.After(deadline) {
			deadline = d
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	batch = live
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, op := range batch {
		if len(op.groups) == 1 {
			op.res = op.res1[:] // the common call: no allocation of its own
		} else {
			op.res = make([][]Result, len(op.groups))
		}
	}
	calls, natives := s.build(batch)
	err := s.exec(ctx, calls, natives)
	if err != nil {
		if retry := noScriptCalls(calls); len(retry) > 0 {
			// NOSCRIPT: those calls did not run (Redis restarted or flushed its scripts).
			// Load the scripts and send those calls again, and only those: the others ran.
			if lerr := s.load(ctx); lerr != nil {
				err = lerr
			} else {
				err = s.exec(ctx, retry, nil)
				for i := range calls {
					if redis.HasErrorPrefix(calls[i].cmd.Err(), "NOSCRIPT") {
						calls[i].cmd = retry[0].cmd
						retry = retry[1:]
					}
				}
			}
		}
	}
	var back []Refund
	if len(natives) > 0 {
		rs := make([]Result, len(natives)) // one allocation for the batch's answers
		for i := range natives {
			n := &natives[i]
			cerr := n.set.Err()
			if cerr == nil {
				cerr = n.incr.Err()
			}
			if cerr != nil {
				n.op.err = cerr
				continue
			}
			var b int64
			rs[i], b = nativeResult(&n.op.groups[n.gi][0], n.op.now, n.incr.Val())
			if b > 0 {
				back = append(back, Refund{Key: n.op.groups[n.gi][0].Key, N: b})
			}
			n.op.res[n.gi] = rs[i : i+1 : i+1]
		}
	}
	for i := range calls {
		c := &calls[i]
		if cerr := c.cmd.Err(); cerr != nil {
			for _, m := range c.members {
				m.op.err = cerr
			}
			continue
		}
		vals, verr := c.cmd.Int64Slice()
		want := 0
		for _, m := range c.members {
			want += 4 * len(m.op.groups[m.gi])
		}
		if verr != nil || len(vals) != want {
			for _, m := range c.members {
				m.op.err = fmt.Errorf("ratelimit: unexpected script reply %v (%v)", c.cmd.Val(), verr)
			}
			continue
		}
		for _, m := range c.members {
			g := m.op.groups[m.gi]
			res := make([]Result, len(g))
			for j := range res {
				v := vals[4*j:]
				if v[0] < 0 {
					// The script failed on this group only (see groupScript): its request fails,
					// its batch-mates do not.
					m.op.err = errGroupFailed
					break
				}
				res[j] = Result{Allowed: v[0] == 1, Remaining: uint64(max(v[1], 0)), Reset: v[2], RetryAfter: v[3]}
			}
			vals = vals[4*len(g):]
			if m.op.err == nil {
				m.op.res[m.gi] = res
			}
		}
	}
	for _, op := range batch {
		if op.err == nil && err != nil {
			for _, r := range op.res {
				if r == nil {
					op.err = err
					break
				}
			}
		}
	}
	// Extra units charged for a call that fails as a whole (another of its groups failed) go back:
	// nobody will hold them.
	back = extraBack(back, natives, func(op *redisOp) bool { return op.err != nil })
	if len(back) > 0 {
		if ctx.Err() != nil {
			// The replies came after every caller's deadline: the take-back cannot be sent on
			// the pipeline's context, and the units would stay charged above the limit (lost
			// capacity once units held elsewhere come back). It goes on a goroutine of its
			// own, within the store's timeout; the callers have left.
			s.late.Add(1)
			go func() {
				defer s.late.Done()
				ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
				defer cancel()
				s.returnUnits(ctx, back)
			}()
		} else {
			// Take the units over the limit back before anyone in the batch gets an answer, so
			// whoever calls after a denial sees the exact count (see fixedNative). Not re-sent
			// if it fails, like any write.
			s.returnUnits(ctx, back)
		}
	}
	// Then each answer goes to its caller, unless the caller has given up: the extra units
	// charged for it go back too, after the others are answered. An answered op is its
	// caller's from then on (it goes back to opPool): only the abandoned ones are read after.
	var abandoned []*redisOp
	for _, op := range batch {
		if !op.state.CompareAndSwap(opPending, opAnswered) {
			abandoned = append(abandoned, op)
		}
		op.done <- struct{}{}
	}
	if len(abandoned) > 0 {
		if late := extraBack(nil, natives, func(op *redisOp) bool {
			return slices.Contains(abandoned, op) && op.err == nil
		}); len(late) > 0 {
			// On a goroutine of its own: the caller that sent this batch has its answer.
			s.late.Add(1)
			go func() {
				defer s.late.Done()
				ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
				defer cancel()
				s.returnUnits(ctx, late)
			}()
		}
	}
}

// extraBack appends the extra units charged by the natives of the calls that match.
func extraBack(back []Refund, natives []nativeCall, match func(*redisOp) bool) []Refund {
	for i := range natives {
		n := &natives[i]
		// match first: an answered call's results belong to its caller from then on.
		if !match(n.op) {
			continue
		}
		if r := n.op.res[n.gi]; r != nil && r[0].Extra > 0 {
			back = append(back, Refund{Key: n.op.groups[n.gi][0].Key, N: int64(r[0].Extra)})
		}
	}
	return back
}

func (s *RedisStore) exec(ctx context.Context, calls []redisCall, natives []nativeCall) error {
	pipe := s.client.Pipeline()
	if len(natives) > 0 {
		// The commands' arguments share one array (and each key is boxed once).
		args := make([]any, 0, 9*len(natives))
		for i := range natives {
			n := &natives[i]
			ch := &n.op.groups[n.gi][0]
			key := any(ch.Key)
			// The scripts' expiry (ms): until the window ends, rounded up, plus a minute.
			ttl := max(ceilDiv(ch.WindowEnd-n.op.now, 1000), 0) + 60000
			b := len(args)
			args = append(args, "set", key, 0, "px", ttl, "nx", "incrby", key, nativeAmount(ch))
			n.set.BoolCmd = *redis.NewBoolCmd(ctx, args[b:b+6]...)
			n.incr.IntCmd = *redis.NewIntCmd(ctx, args[b+6:b+9]...)
			_ = pipe.Process(ctx, &n.set)
			_ = pipe.Process(ctx, &n.incr)
		}
	}
	for i := range calls {
		calls[i].cmd = evalCmd(ctx, "evalsha", calls[i].sha, calls[i].keys, calls[i].args)
		_ = pipe.Process(ctx, noRetry{calls[i].cmd})
	}
	_, err := pipe.Exec(ctx)
	return err
}

// noRetry marks a command that must not be sent again once it may have reached Redis: every
// command of this store charges or gives back units, and a second run would count twice.
// go-redis's Cluster client re-sends a pipeline after a broken connection (whatever
// MaxRetries says) unless one of its commands says NoRetry; it still follows MOVED and ASK.
type noRetry struct{ redis.Cmder }

func (noRetry) NoRetry() bool { return true }

// noRetryBool and noRetryInt are noRetry for the native commands, held by value.
type noRetryBool struct{ redis.BoolCmd }

func (*noRetryBool) NoRetry() bool { return true }

type noRetryInt struct{ redis.IntCmd }

func (*noRetryInt) NoRetry() bool { return true }

// evalCmd is the EVAL or EVALSHA command of a script (what go-redis's Eval builds).
func evalCmd(ctx context.Context, name, script string, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, name, script, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3)
	}
	return cmd
}

// returnScript gives units back to a counter that still exists: one that expired, or was
// lost with a Redis restart, is not recreated without an expiry.
const returnScript = `if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECRBY', KEYS[1], ARGV[1]) end
return 0`

// returnUnits gives units back, one script call per counter in one pipeline, and returns
// the units given back and the indexes of the refunds that failed, with their errors.
func (s *RedisStore) returnUnits(ctx context.Context, units []Refund) (refunded int64, failed []int, errs []error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(units))
	for i, u := range units {
		cmds[i] = evalCmd(ctx, "eval", returnScript, []string{u.Key}, []any{u.N})
		_ = pipe.Process(ctx, noRetry{cmds[i]})
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			failed, errs = append(failed, i), append(errs, err)
			continue
		}
		refunded += units[i].N
	}
	return refunded, failed, errs
}

// Refund gives units back (see RefundStore), within the store's Timeout.
func (s *RedisStore) Refund(ctx context.Context, units []Refund) (refunded int64, unsent []int) {
	if len(units) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	refunded, failed, errs := s.returnUnits(ctx, units)
	for k, i := range failed {
		if notSent(errs[k]) {
			unsent = append(unsent, i)
		}
	}
	return refunded, unsent
}

// notSent reports whether err means the command never reached Redis: no connection could be
// made, or the client is closed.
func notSent(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed)
}

// noScriptCalls returns copies of the calls Redis answered NOSCRIPT (in order).
func noScriptCalls(calls []redisCall) []redisCall {
	var out []redisCall
	for i := range calls {
		if err := calls[i].cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			out = append(out, calls[i])
		}
	}
	return out
}

// load loads the scripts (on every master of a cluster).
func (s *RedisStore) load(ctx context.Context) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	sha, err := s.client.ScriptLoad(ctx, groupScript).Result()
	if err != nil {
		return err
	}
	if sha != s.sha {
		return fmt.Errorf("ratelimit: script sha %s, expected %s", sha, s.sha)
	}
	return nil
}
