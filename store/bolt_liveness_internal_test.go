package store

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// onDisk reads the live bucket straight from the file.
func onDisk(t *testing.T, b *Bolt) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(liveBucket).ForEach(func(k, v []byte) error {
			out[string(k)] = decodeLiveness(int64(binary.BigEndian.Uint64(v)))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The embedded store's liveness reaches the file at each flush without Close: touches,
// newer touches and forgets, each written once.
func TestBoltLivenessFlushesWithoutClose(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.live.close(); err != nil { // restart the flusher with a short interval
		t.Fatal(err)
	}
	if b.live, err = openBoltLiveness(b.db, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; i < 100; i++ {
		_ = b.Touch(ctx, "a", t0.Add(time.Duration(i)*time.Second))
	}
	_ = b.Touch(ctx, "b", t0)
	wait := func(what string, ok func(map[string]time.Time) bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for !ok(onDisk(t, b)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: on disk %v", what, onDisk(t, b))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("touches", func(m map[string]time.Time) bool {
		return len(m) == 2 && m["a"].Equal(t0.Add(99*time.Second)) && m["b"].Equal(t0)
	})
	_ = b.Forget(ctx, "a")
	wait("forget", func(m map[string]time.Time) bool { _, ok := m["a"]; return !ok && len(m) == 1 })
	if rev, _ := b.Revision(ctx); rev != 0 {
		t.Fatalf("flushes made revision %d", rev)
	}
}

// Two Closes at once: neither returns before the heartbeats not yet flushed are in the
// file, so the store reopened right after has them (the second Close used to close the file
// under the first one's final flush).
func TestBoltConcurrentCloseKeepsLiveness(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; i < 30; i++ {
		path := filepath.Join(dir, fmt.Sprintf("gw%d.db", i))
		b, err := OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Touch(t.Context(), "a", t0); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- b.Close() }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("close %d: %v", i, err)
			}
		}
		b2, err := OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := b2.LastSeen(t.Context(), "a")
		b2.Close()
		if !got["a"].Equal(t0) {
			t.Fatalf("round %d: after two concurrent closes the heartbeat is lost: %v", i, got)
		}
	}
}
