package analytics

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltStore keeps aggregates in an embedded bbolt file (single node). Rows live in one
// bucket per resolution, keyed by 8-byte big-endian bucket start (unix seconds) followed by
// the encoded Key, so a time range is one cursor seek; values are the JSON object of the
// row's non-zero counters.
type BoltStore struct {
	db *bolt.DB
}

// OpenBoltStore opens (creating when missing) the bbolt file at path, conventionally
// DATA_DIR/analytics.db. The caller closes it after the Service.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("analytics: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, r := range Resolutions {
			if _, err := tx.CreateBucketIfNotExists(boltBucket(r)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("analytics: init %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

func boltBucket(r Resolution) []byte { return []byte("agg_" + r.String()) }

func boltKey(start time.Time, k Key) []byte {
	enc := k.encode()
	b := make([]byte, 8, 8+len(enc))
	binary.BigEndian.PutUint64(b, uint64(start.Unix()))
	return append(b, enc...)
}

func boltTime(t time.Time) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(max(t.Unix(), 0)))
	return b
}

func encodeStats(st *Stats) ([]byte, error) {
	m := make(map[string]uint64, 12)
	st.fields(func(n string, v uint64) { m[n] = v })
	return json.Marshal(m)
}

func decodeStats(b []byte, st *Stats) error {
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("analytics: bad stored row: %w", err)
	}
	for n, v := range m {
		if err := st.addField(n, v); err != nil {
			return err
		}
	}
	return nil
}

// Merge adds rows in one write transaction.
func (s *BoltStore) Merge(ctx context.Context, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for i := range rows {
			r := &rows[i]
			b := tx.Bucket(boltBucket(r.Res))
			k := boltKey(r.Start, r.Key)
			st := r.Stats
			if old := b.Get(k); old != nil {
				var prev Stats
				if err := decodeStats(old, &prev); err != nil {
					return err
				}
				prev.Merge(&r.Stats)
				st = prev
			}
			v, err := encodeStats(&st)
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Scan reads rows of res with start in [from, to).
func (s *BoltStore) Scan(ctx context.Context, res Resolution, from, to time.Time, fn func(Row) error) error {
	lo, hi := boltTime(from), boltTime(to)
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket(res)).Cursor()
		n := 0
		for k, v := c.Seek(lo); k != nil && bytes.Compare(k[:8], hi) < 0; k, v = c.Next() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(k) < 8 {
				continue
			}
			key, err := decodeKey(string(k[8:]))
			if err != nil {
				return err
			}
			row := Row{Res: res, Start: time.Unix(int64(binary.BigEndian.Uint64(k[:8])), 0).UTC(), Key: key}
			if err := decodeStats(v, &row.Stats); err != nil {
				return err
			}
			if err := fn(row); err != nil {
				return err
			}
		}
		return nil
	})
}

// Expire deletes rows of res older than before.
func (s *BoltStore) Expire(ctx context.Context, res Resolution, before time.Time) error {
	hi := boltTime(before)
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket(res)).Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k[:min(8, len(k))], hi) < 0; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return ctx.Err()
	})
}
