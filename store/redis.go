package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/model"
)

// Redis is the shared store for several replicas: one Redis (single node, Sentinel or
// Cluster) holds every object, a global revision counter and each object's mod revision.
//
// Keys (all hash-tagged with the prefix, so they share one Cluster slot):
//
//	{agw}:rev             the store revision
//	{agw}:obj:<kind>      hash id -> object JSON
//	{agw}:mod:<kind>      hash id -> mod revision
//	{agw}:txn:<random>    short-lived marker that makes a retried transaction apply once
//	{agw}:live            hash id -> last heartbeat (µs since the epoch); not versioned
//	{agw}:changes         pub/sub channel: each new revision is published on it
//
// Writes run in one Lua script that checks every precondition and then writes, so concurrent
// writers on different replicas never lose an update: the stale one gets ErrConflict. Reads
// of several keys run in MULTI/EXEC, so Load sees one revision. Each replica follows the
// others through pub/sub and, in case a message is missed (a reconnect, a network blip), by
// reading the revision every poll interval.
type Redis struct {
	c       redis.UniversalClient
	log     *slog.Logger
	prefix  string // the hash tag, braces included: "{agw}"
	poll    time.Duration
	channel string

	mu       sync.RWMutex // guards closed; held shared by in-flight calls' start
	closed   bool
	inflight sync.WaitGroup

	seenMu sync.Mutex
	seen   uint64 // the highest revision observed (notified to watchers)
	lowLog bool   // a regression was logged; reset once the revision is past seen again

	stop     context.CancelFunc
	followed chan struct{}

	watchers
}

// txnMarkerTTL bounds how long a transaction's idempotency marker lives: longer than any
// client retry of the same call.
const txnMarkerTTL = 5 * time.Minute

// OpenRedis connects to the Redis that REDIS_URL names (see ParseRedisURL) and starts
// following its changes. It waits up to 30 s (or until ctx ends) for Redis to answer, so a
// replica started next to a Redis that is still loading comes up without a restart.
func OpenRedis(ctx context.Context, rawURL string, log *slog.Logger) (Store, error) {
	return openRedis(ctx, rawURL, log)
}

// OpenRedisStore is OpenRedis returning the concrete type (tests, the discovery lease).
func OpenRedisStore(ctx context.Context, rawURL string, log *slog.Logger) (*Redis, error) {
	return openRedis(ctx, rawURL, log)
}

func openRedis(ctx context.Context, rawURL string, log *slog.Logger) (*Redis, error) {
	if log == nil {
		log = slog.Default()
	}
	opts, so, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	c := redis.NewUniversalClient(opts)
	r := &Redis{
		c:       c,
		log:     log.With("component", "store", "store", "redis"),
		prefix:  "{" + so.prefix + "}",
		poll:    so.poll,
		channel: "{" + so.prefix + "}:changes",
	}
	r.watchers.init()

	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rev uint64
	for attempt := 0; ; attempt++ {
		rev, err = r.readRevision(waitCtx)
		if err == nil {
			break
		}
		if attempt == 0 {
			r.log.Warn("redis does not answer yet; retrying", "url", redactURL(rawURL), "error", err.Error())
		}
		select {
		case <-waitCtx.Done():
			_ = c.Close()
			return nil, fmt.Errorf("redis %s: %w", redactURL(rawURL), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	r.seen = rev
	followCtx, stop := context.WithCancel(context.Background())
	r.stop, r.followed = stop, make(chan struct{})
	ready := make(chan struct{})
	go r.follow(followCtx, ready)
	// Wait for the subscription so a write made right after Open is not missed by the
	// channel (the poll would still catch it, later).
	select {
	case <-ready:
	case <-time.After(2 * time.Second):
		r.log.Warn("change subscription not confirmed yet; relying on the revision poll until it is")
	}
	r.log.Info("redis store opened", "url", redactURL(rawURL), "prefix", so.prefix, "revision", rev,
		"poll_interval", so.poll.String())
	return r, nil
}

// Client returns the underlying go-redis client (shared with helpers such as leases).
func (r *Redis) Client() redis.UniversalClient { return r.c }

// Prefix returns the hash tag of the store's keys, braces included ("{agw}").
func (r *Redis) Prefix() string { return r.prefix }

func (r *Redis) revKey() string                 { return r.prefix + ":rev" }
func (r *Redis) objKey(k model.Kind) string     { return r.prefix + ":obj:" + string(k) }
func (r *Redis) modKey(k model.Kind) string     { return r.prefix + ":mod:" + string(k) }
func (r *Redis) txnKey(id string) string        { return r.prefix + ":txn:" + id }
func (r *Redis) kindKeys(k model.Kind) []string { return []string{r.objKey(k), r.modKey(k)} }
func (r *Redis) liveKey() string                { return r.prefix + ":live" }

// begin registers an in-flight call; Close waits for them.
func (r *Redis) begin() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	r.inflight.Add(1)
	return nil
}

func (r *Redis) end() { r.inflight.Done() }

func mapRedisErr(err error) error {
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return err
}

func parseRev(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// Get returns one object.
func (r *Redis) Get(ctx context.Context, kind model.Kind, id string) (model.RawObject, error) {
	if err := checkKind(kind); err != nil {
		return model.RawObject{}, err
	}
	if err := r.begin(); err != nil {
		return model.RawObject{}, err
	}
	defer r.end()
	var data, mod *redis.StringCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		data = p.HGet(ctx, r.objKey(kind), id)
		mod = p.HGet(ctx, r.modKey(kind), id)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return model.RawObject{}, mapRedisErr(err)
	}
	if errors.Is(data.Err(), redis.Nil) {
		return model.RawObject{}, ErrNotFound
	}
	rev, err := parseRev(mod.Val())
	if err != nil {
		return model.RawObject{}, fmt.Errorf("%s/%s: bad mod revision %q", kind, id, mod.Val())
	}
	return model.RawObject{ID: id, Revision: rev, Data: []byte(data.Val())}, nil
}

// List returns every object of a kind, sorted by id.
func (r *Redis) List(ctx context.Context, kind model.Kind) ([]model.RawObject, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if err := r.begin(); err != nil {
		return nil, err
	}
	defer r.end()
	var data, mods *redis.MapStringStringCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		data = p.HGetAll(ctx, r.objKey(kind))
		mods = p.HGetAll(ctx, r.modKey(kind))
		return nil
	})
	if err != nil {
		return nil, mapRedisErr(err)
	}
	return assemble(kind, data.Val(), mods.Val())
}

func assemble(kind model.Kind, data, mods map[string]string) ([]model.RawObject, error) {
	out := make([]model.RawObject, 0, len(data))
	for id, d := range data {
		rev, err := parseRev(mods[id])
		if err != nil {
			return nil, fmt.Errorf("%s/%s: bad mod revision %q", kind, id, mods[id])
		}
		out = append(out, model.RawObject{ID: id, Revision: rev, Data: []byte(d)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Load reads every object of every kind and the revision in one MULTI/EXEC, so the result
// is the state at exactly one revision.
func (r *Redis) Load(ctx context.Context) (uint64, map[model.Kind][]model.RawObject, error) {
	if err := r.begin(); err != nil {
		return 0, nil, err
	}
	defer r.end()
	var revCmd *redis.StringCmd
	data := make([]*redis.MapStringStringCmd, len(model.Kinds))
	mods := make([]*redis.MapStringStringCmd, len(model.Kinds))
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		revCmd = p.Get(ctx, r.revKey())
		for i, k := range model.Kinds {
			data[i] = p.HGetAll(ctx, r.objKey(k))
			mods[i] = p.HGetAll(ctx, r.modKey(k))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, nil, mapRedisErr(err)
	}
	for i := range model.Kinds { // a missing revision key is redis.Nil; any other failure counts
		if e := errors.Join(data[i].Err(), mods[i].Err()); e != nil {
			return 0, nil, mapRedisErr(e)
		}
	}
	rev, err := parseRev(revCmd.Val())
	if err != nil {
		return 0, nil, fmt.Errorf("bad store revision %q", revCmd.Val())
	}
	out := make(map[model.Kind][]model.RawObject, len(model.Kinds))
	for i, k := range model.Kinds {
		objs, err := assemble(k, data[i].Val(), mods[i].Val())
		if err != nil {
			return 0, nil, err
		}
		if len(objs) > 0 {
			out[k] = objs
		}
	}
	return rev, out, nil
}

// Revision returns the current store revision.
func (r *Redis) Revision(ctx context.Context) (uint64, error) {
	if err := r.begin(); err != nil {
		return 0, err
	}
	defer r.end()
	return r.readRevision(ctx)
}

func (r *Redis) readRevision(ctx context.Context) (uint64, error) {
	v, err := r.c.Get(ctx, r.revKey()).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, mapRedisErr(err)
	}
	rev, err := parseRev(v)
	if err != nil {
		return 0, fmt.Errorf("bad store revision %q", v)
	}
	return rev, nil
}

// Txn applies the ops atomically at one new revision, or none of them.
func (r *Redis) Txn(ctx context.Context, ops []Op) (uint64, error) {
	if len(ops) == 0 {
		return r.Revision(ctx)
	}
	for i, op := range ops {
		if err := checkKind(op.Kind); err != nil {
			return 0, &OpError{Index: i, Op: op, Err: err}
		}
		if op.ID == "" {
			return 0, &OpError{Index: i, Op: op, Err: errors.New("empty id")}
		}
		switch op.Type {
		case OpPut, OpCreate, OpDelete:
		default:
			return 0, &OpError{Index: i, Op: op, Err: fmt.Errorf("unknown op type %d", op.Type)}
		}
	}
	if err := r.begin(); err != nil {
		return 0, err
	}
	defer r.end()
	var id [16]byte
	_, _ = rand.Read(id[:])
	rev, err := r.txn(ctx, hex.EncodeToString(id[:]), ops)
	if err != nil {
		return 0, err
	}
	r.observe(rev)
	return rev, nil
}

// txn runs the script under the idempotency marker txnID.
func (r *Redis) txn(ctx context.Context, txnID string, ops []Op) (uint64, error) {
	keys := make([]string, 0, 2+2*len(ops))
	keys = append(keys, r.revKey(), r.txnKey(txnID))
	args := make([]any, 0, 3+4*len(ops))
	args = append(args, r.channel, txnMarkerTTL.Milliseconds(), r.seenRevision())
	for _, op := range ops {
		keys = append(keys, r.kindKeys(op.Kind)...)
		t := "p"
		switch op.Type {
		case OpCreate:
			t = "c"
		case OpDelete:
			t = "d"
		}
		args = append(args, t, op.ID, op.IfRevision, op.Data)
	}
	res, err := txnScript.Run(ctx, r.c, keys, args...).Int64Slice()
	if err != nil {
		return 0, mapRedisErr(err)
	}
	switch {
	case len(res) == 2 && res[0] == 0:
		return uint64(res[1]), nil
	case len(res) == 4 && res[0] == 1 && res[1] >= 0 && int(res[1]) < len(ops):
		i := int(res[1])
		cause := CheckOp(ops[i], res[2] == 1, uint64(res[3]))
		if cause == nil { // the script and CheckOp disagree: never expected
			cause = fmt.Errorf("precondition failed (exists=%d, revision=%d)", res[2], res[3])
		}
		return 0, &OpError{Index: i, Op: ops[i], Err: cause}
	}
	return 0, fmt.Errorf("unexpected transaction reply %v", res)
}

// Touch records that id was alive at t, unless its entry is newer (a script compares, so
// replicas whose heartbeats arrive out of order never move it back). It writes neither the
// revision nor the change channel.
func (r *Redis) Touch(ctx context.Context, id string, t time.Time) error {
	if id == "" {
		return errors.New("empty id")
	}
	if err := r.begin(); err != nil {
		return err
	}
	defer r.end()
	return mapRedisErr(touchScript.Run(ctx, r.c, []string{r.liveKey()}, id, encodeLiveness(t)).Err())
}

// LastSeen returns the liveness entries of ids (of every id when none is given).
func (r *Redis) LastSeen(ctx context.Context, ids ...string) (map[string]time.Time, error) {
	if err := r.begin(); err != nil {
		return nil, err
	}
	defer r.end()
	out := map[string]time.Time{}
	if len(ids) == 0 {
		all, err := r.c.HGetAll(ctx, r.liveKey()).Result()
		if err != nil {
			return nil, mapRedisErr(err)
		}
		for id, v := range all {
			if us, err := strconv.ParseInt(v, 10, 64); err == nil {
				out[id] = decodeLiveness(us)
			}
		}
		return out, nil
	}
	vals, err := r.c.HMGet(ctx, r.liveKey(), ids...).Result()
	if err != nil {
		return nil, mapRedisErr(err)
	}
	for i, v := range vals {
		sv, ok := v.(string)
		if !ok {
			continue // nil: no entry
		}
		if us, err := strconv.ParseInt(sv, 10, 64); err == nil {
			out[ids[i]] = decodeLiveness(us)
		}
	}
	return out, nil
}

// Forget removes the liveness entries of ids.
func (r *Redis) Forget(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := r.begin(); err != nil {
		return err
	}
	defer r.end()
	return mapRedisErr(r.c.HDel(ctx, r.liveKey(), ids...).Err())
}

// Ping reports whether Redis answers, reading the revision key (on Cluster, from the node
// that owns the store's slot).
func (r *Redis) Ping(ctx context.Context) error {
	_, err := r.Revision(ctx)
	return err
}

// Close stops following changes, waits for in-flight calls, closes watch channels and the
// connection pool.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.stop()
	<-r.followed
	r.inflight.Wait()
	r.watchers.close()
	return r.c.Close()
}
