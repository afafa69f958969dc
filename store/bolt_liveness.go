package store

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltLivenessFlush is how often the embedded store writes liveness to its file.
const boltLivenessFlush = time.Second

// boltLiveness keeps the embedded store's liveness entries in memory, authoritative (the
// file is locked to one process), and writes the changed ones to the "live" bucket once
// per flush interval in one transaction, and at Close. A heartbeat then costs no fsync, and
// a thousand instances heartbeating cost one fsync a second, not a thousand, and do not
// queue behind configuration writes for bbolt's single writer. A crash loses at most one
// interval of heartbeats: the instances heartbeat again within a third of their TTL.
type boltLiveness struct {
	db *bolt.DB

	mu     sync.Mutex
	seen   map[string]int64    // id -> µs since the epoch
	dirty  map[string]struct{} // written since the last flush
	gone   map[string]struct{} // forgotten since the last flush
	closed bool

	closeOnce sync.Once
	closeErr  error

	stop chan struct{}
	done chan struct{}
}

func openBoltLiveness(db *bolt.DB, every time.Duration) (*boltLiveness, error) {
	l := &boltLiveness{db: db, seen: map[string]int64{}, dirty: map[string]struct{}{}, gone: map[string]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(liveBucket).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				l.seen[string(k)] = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	go l.run(every)
	return l, nil
}

func (l *boltLiveness) run(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.flush() // a failed flush keeps its entries dirty for the next one
		}
	}
}

// flush writes the entries changed since the last flush in one transaction.
func (l *boltLiveness) flush() error {
	l.mu.Lock()
	if len(l.dirty) == 0 && len(l.gone) == 0 {
		l.mu.Unlock()
		return nil
	}
	put := make(map[string]int64, len(l.dirty))
	for id := range l.dirty {
		put[id] = l.seen[id]
	}
	del := l.gone
	l.dirty, l.gone = map[string]struct{}{}, map[string]struct{}{}
	l.mu.Unlock()
	err := l.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(liveBucket)
		for id := range del {
			if err := bk.Delete([]byte(id)); err != nil {
				return err
			}
		}
		for id, us := range put {
			v := make([]byte, 8)
			binary.BigEndian.PutUint64(v, uint64(us))
			if err := bk.Put([]byte(id), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil { // mark them again, unless changed meanwhile (then already marked)
		l.mu.Lock()
		for id := range put {
			if _, ok := l.seen[id]; ok {
				if _, g := l.gone[id]; !g {
					l.dirty[id] = struct{}{}
				}
			}
		}
		for id := range del {
			if _, ok := l.seen[id]; !ok {
				l.gone[id] = struct{}{}
			}
		}
		l.mu.Unlock()
	}
	return err
}

// close stops the flusher and writes what is left. Every caller returns after that final
// flush (once): a second Close returning at once would close the file under it.
func (l *boltLiveness) close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stop)
		<-l.done
		l.closeErr = l.flush()
	})
	return l.closeErr
}

// Touch records that id was alive at t, unless its entry is newer; neither the revision
// nor the watchers are touched, and the file is written at the next flush.
func (b *Bolt) Touch(_ context.Context, id string, t time.Time) error {
	if id == "" {
		return errors.New("empty id")
	}
	us := encodeLiveness(t)
	l := b.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if cur, ok := l.seen[id]; ok && cur >= us {
		return nil
	}
	l.seen[id] = us
	l.dirty[id] = struct{}{}
	delete(l.gone, id)
	return nil
}

// LastSeen returns the liveness entries of ids (of every id when none is given).
func (b *Bolt) LastSeen(_ context.Context, ids ...string) (map[string]time.Time, error) {
	l := b.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if len(ids) == 0 {
		out := make(map[string]time.Time, len(l.seen))
		for id, us := range l.seen {
			out[id] = decodeLiveness(us)
		}
		return out, nil
	}
	out := make(map[string]time.Time, len(ids))
	for _, id := range ids {
		if us, ok := l.seen[id]; ok {
			out[id] = decodeLiveness(us)
		}
	}
	return out, nil
}

// Forget removes the liveness entries of ids.
func (b *Bolt) Forget(_ context.Context, ids ...string) error {
	l := b.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	for _, id := range ids {
		if _, ok := l.seen[id]; !ok {
			continue
		}
		delete(l.seen, id)
		delete(l.dirty, id)
		l.gone[id] = struct{}{}
	}
	return nil
}
