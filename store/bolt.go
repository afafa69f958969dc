package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/api-gateway/api-gateway/model"
)

var (
	metaBucket  = []byte("meta")
	revisionKey = []byte("revision")
	// liveBucket holds the liveness entries (id -> microseconds since the epoch, 8 bytes big
	// endian), apart from every kind's bucket and from the revision.
	liveBucket = []byte("live")
)

func kindBucket(k model.Kind) []byte { return []byte("obj/" + string(k)) }

// Bolt is the embedded store: one bbolt file, every transaction fsync'd before it is
// acknowledged, so an acknowledged write survives a crash (bbolt's copy-on-write pages keep
// the file consistent whatever the moment of the crash).
type Bolt struct {
	db *bolt.DB
	watchers
	live *boltLiveness
}

// OpenBolt opens (creating if needed) the store file at path.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: the file is locked by another process", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(metaBucket); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(liveBucket); err != nil {
			return err
		}
		for _, k := range model.Kinds {
			if _, err := tx.CreateBucketIfNotExists(kindBucket(k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	b := &Bolt{db: db}
	b.watchers.init()
	if b.live, err = openBoltLiveness(db, boltLivenessFlush); err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return b, nil
}

// encodeRecord prefixes the JSON with the object's mod revision.
func encodeRecord(rev uint64, data []byte) []byte {
	out := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(out, rev)
	copy(out[8:], data)
	return out
}

func decodeRecord(id string, v []byte) model.RawObject {
	data := make([]byte, len(v)-8)
	copy(data, v[8:])
	return model.RawObject{ID: id, Revision: binary.BigEndian.Uint64(v[:8]), Data: data}
}

func readRevision(tx *bolt.Tx) uint64 {
	v := tx.Bucket(metaBucket).Get(revisionKey)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func checkKind(k model.Kind) error {
	for _, kk := range model.Kinds {
		if kk == k {
			return nil
		}
	}
	return fmt.Errorf("unknown kind %q", k)
}

// Get returns one object.
func (b *Bolt) Get(_ context.Context, kind model.Kind, id string) (model.RawObject, error) {
	if err := checkKind(kind); err != nil {
		return model.RawObject{}, err
	}
	var out model.RawObject
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(kindBucket(kind)).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		out = decodeRecord(id, v)
		return nil
	})
	return out, b.mapErr(err)
}

// List returns every object of a kind, sorted by id.
func (b *Bolt) List(_ context.Context, kind model.Kind) ([]model.RawObject, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	var out []model.RawObject
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(kindBucket(kind)).ForEach(func(k, v []byte) error {
			out = append(out, decodeRecord(string(k), v))
			return nil
		})
	})
	return out, b.mapErr(err)
}

// Load reads everything at one revision.
func (b *Bolt) Load(_ context.Context) (uint64, map[model.Kind][]model.RawObject, error) {
	out := map[model.Kind][]model.RawObject{}
	var rev uint64
	err := b.db.View(func(tx *bolt.Tx) error {
		rev = readRevision(tx)
		for _, k := range model.Kinds {
			err := tx.Bucket(kindBucket(k)).ForEach(func(id, v []byte) error {
				out[k] = append(out[k], decodeRecord(string(id), v))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return rev, out, b.mapErr(err)
}

// Revision returns the current revision.
func (b *Bolt) Revision(_ context.Context) (uint64, error) {
	var rev uint64
	err := b.db.View(func(tx *bolt.Tx) error { rev = readRevision(tx); return nil })
	return rev, b.mapErr(err)
}

// Txn applies the ops atomically at one new revision.
func (b *Bolt) Txn(_ context.Context, ops []Op) (uint64, error) {
	if len(ops) == 0 {
		return b.Revision(context.Background())
	}
	for i, op := range ops {
		if err := checkKind(op.Kind); err != nil {
			return 0, &OpError{Index: i, Op: op, Err: err}
		}
		if op.ID == "" {
			return 0, &OpError{Index: i, Op: op, Err: errors.New("empty id")}
		}
	}
	var rev uint64
	// Batch coalesces concurrent transactions into one fsync; each still gets its own
	// revision and its own preconditions (a failing one is re-run alone by bbolt).
	err := b.db.Batch(func(tx *bolt.Tx) error {
		rev = readRevision(tx) + 1
		for i, op := range ops {
			bk := tx.Bucket(kindBucket(op.Kind))
			cur := bk.Get([]byte(op.ID))
			var curRev uint64
			if cur != nil {
				curRev = binary.BigEndian.Uint64(cur[:8])
			}
			if err := CheckOp(op, cur != nil, curRev); err != nil {
				return &OpError{Index: i, Op: op, Err: err}
			}
			if op.Type == OpDelete {
				if err := bk.Delete([]byte(op.ID)); err != nil {
					return err
				}
				continue
			}
			if err := bk.Put([]byte(op.ID), encodeRecord(rev, op.Data)); err != nil {
				return err
			}
		}
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, rev)
		return tx.Bucket(metaBucket).Put(revisionKey, v)
	})
	if err != nil {
		return 0, b.mapErr(err)
	}
	b.notify(rev)
	return rev, nil
}

// CheckOp applies the preconditions of one op to an object's current state; both stores use
// it so they agree on every edge case.
func CheckOp(op Op, exists bool, curRev uint64) error {
	switch op.Type {
	case OpCreate:
		if exists {
			return ErrExists
		}
	case OpDelete:
		if !exists {
			return ErrNotFound
		}
	}
	if op.IfRevision != 0 {
		if !exists {
			return ErrNotFound
		}
		if curRev != op.IfRevision {
			return fmt.Errorf("%w: object is at revision %d, not %d", ErrConflict, curRev, op.IfRevision)
		}
	}
	return nil
}

// Ping checks the database is open.
func (b *Bolt) Ping(context.Context) error {
	return b.mapErr(b.db.View(func(*bolt.Tx) error { return nil }))
}

// Close writes the liveness entries not yet on disk and closes the file after in-flight
// transactions finish.
func (b *Bolt) Close() error {
	b.watchers.close()
	return errors.Join(b.live.close(), b.db.Close())
}

// Path returns the database file path.
func (b *Bolt) Path() string { return b.db.Path() }

func (b *Bolt) mapErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// watchers fans revision numbers out to Watch channels, coalescing for slow readers.
type watchers struct {
	mu     sync.Mutex
	subs   map[chan uint64]struct{}
	closed bool
}

func (w *watchers) init() { w.subs = map[chan uint64]struct{}{} }

// Watch returns a channel of new revisions until ctx ends or the store closes.
func (w *watchers) Watch(ctx context.Context) <-chan uint64 {
	ch := make(chan uint64, 1)
	w.mu.Lock()
	if w.closed {
		close(ch)
		w.mu.Unlock()
		return ch
	}
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	go func() {
		<-ctx.Done()
		w.mu.Lock()
		if _, ok := w.subs[ch]; ok {
			delete(w.subs, ch)
			close(ch)
		}
		w.mu.Unlock()
	}()
	return ch
}

func (w *watchers) notify(rev uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- rev:
		default:
			// Replace the pending value with the newer one.
			select {
			case old := <-ch:
				if old > rev {
					rev = old
				}
			default:
			}
			select {
			case ch <- rev:
			default:
			}
		}
	}
}

func (w *watchers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for ch := range w.subs {
		close(ch)
	}
	w.subs = map[chan uint64]struct{}{}
}
