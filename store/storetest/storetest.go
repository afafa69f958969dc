// Package storetest is the conformance suite every store.Store implementation passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// Run runs the suite; open returns a new, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("CRUDAndRevisions", func(t *testing.T) { testCRUD(t, open(t)) })
	t.Run("Preconditions", func(t *testing.T) { testPreconditions(t, open(t)) })
	t.Run("TxnAtomic", func(t *testing.T) { testTxnAtomic(t, open(t)) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, open(t)) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("LivenessIsNotARevision", func(t *testing.T) { testLivenessNoRevision(t, open(t)) })
	t.Run("LivenessEntries", func(t *testing.T) { testLivenessEntries(t, open(t)) })
	t.Run("SnapshotMergesLiveness", func(t *testing.T) { testSnapshotLiveness(t, open(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func testCRUD(t *testing.T, s store.Store) {
	c := ctx(t)
	rev0, err := s.Revision(c)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := store.Create(c, s, model.KindRoutes, "a", []byte(`{"id":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r1 <= rev0 {
		t.Fatalf("revision did not grow: %d -> %d", rev0, r1)
	}
	o, err := s.Get(c, model.KindRoutes, "a")
	if err != nil || o.Revision != r1 || string(o.Data) != `{"id":"a"}` {
		t.Fatalf("get: %+v %v", o, err)
	}
	r2, err := store.Put(c, s, model.KindRoutes, "b", []byte(`{"id":"b"}`), 0)
	if err != nil || r2 <= r1 {
		t.Fatalf("put: %d %v", r2, err)
	}
	list, err := s.List(c, model.KindRoutes)
	if err != nil || len(list) != 2 || list[0].ID != "a" || list[1].ID != "b" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if _, err := s.Get(c, model.KindServices, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("kinds must not share ids: %v", err)
	}
	rev, all, err := s.Load(c)
	if err != nil || rev != r2 || len(all[model.KindRoutes]) != 2 {
		t.Fatalf("load: %d %v %v", rev, all, err)
	}
	r3, err := store.Delete(c, s, model.KindRoutes, "a", 0)
	if err != nil || r3 <= r2 {
		t.Fatalf("delete: %d %v", r3, err)
	}
	if _, err := s.Get(c, model.KindRoutes, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted object still there: %v", err)
	}
	if cur, _ := s.Revision(c); cur != r3 {
		t.Fatalf("revision %d, want %d", cur, r3)
	}
	if err := s.Ping(c); err != nil {
		t.Fatal(err)
	}
}

func testPreconditions(t *testing.T, s store.Store) {
	c := ctx(t)
	r1, err := store.Create(c, s, model.KindAPIKeys, "k", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(c, s, model.KindAPIKeys, "k", []byte(`{}`)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if _, err := store.Put(c, s, model.KindAPIKeys, "k", []byte(`{"x":1}`), r1+100); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale put: %v", err)
	}
	r2, err := store.Put(c, s, model.KindAPIKeys, "k", []byte(`{"x":2}`), r1)
	if err != nil {
		t.Fatalf("put with current revision: %v", err)
	}
	if _, err := store.Put(c, s, model.KindAPIKeys, "k", []byte(`{"x":3}`), r1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("put with old revision: %v", err)
	}
	if _, err := store.Put(c, s, model.KindAPIKeys, "missing", []byte(`{}`), 5); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("conditional put on missing: %v", err)
	}
	if _, err := store.Delete(c, s, model.KindAPIKeys, "missing", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	if _, err := store.Delete(c, s, model.KindAPIKeys, "k", r1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if _, err := store.Delete(c, s, model.KindAPIKeys, "k", r2); err != nil {
		t.Fatalf("delete with revision: %v", err)
	}
}

func testTxnAtomic(t *testing.T, s store.Store) {
	c := ctx(t)
	if _, err := store.Create(c, s, model.KindRoutes, "x", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Revision(c)
	_, err := s.Txn(c, []store.Op{
		{Type: store.OpPut, Kind: model.KindRoutes, ID: "y", Data: []byte(`{}`)},
		{Type: store.OpCreate, Kind: model.KindRoutes, ID: "x", Data: []byte(`{}`)},
	})
	var oe *store.OpError
	if !errors.As(err, &oe) || oe.Index != 1 || !errors.Is(err, store.ErrExists) {
		t.Fatalf("want OpError at 1 wrapping ErrExists, got %v", err)
	}
	if _, err := s.Get(c, model.KindRoutes, "y"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("failed txn left a write behind: %v", err)
	}
	if after, _ := s.Revision(c); after != before {
		t.Fatalf("failed txn bumped the revision %d -> %d", before, after)
	}
	rev, err := s.Txn(c, []store.Op{
		{Type: store.OpPut, Kind: model.KindRoutes, ID: "y", Data: []byte(`{}`)},
		{Type: store.OpPut, Kind: model.KindServices, ID: "s", Data: []byte(`{}`)},
		{Type: store.OpDelete, Kind: model.KindRoutes, ID: "x"},
	})
	if err != nil || rev != before+1 {
		t.Fatalf("txn: rev %d (before %d) %v", rev, before, err)
	}
	y, _ := s.Get(c, model.KindRoutes, "y")
	sv, _ := s.Get(c, model.KindServices, "s")
	if y.Revision != rev || sv.Revision != rev {
		t.Fatalf("objects of one txn must share its revision: %d %d %d", y.Revision, sv.Revision, rev)
	}
}

func testWatch(t *testing.T, s store.Store) {
	c, cancel := context.WithCancel(ctx(t))
	ch := s.Watch(c)
	var last uint64
	for i := 0; i < 5; i++ {
		rev, err := store.Put(c, s, model.KindTenants, fmt.Sprint("t", i), []byte(`{}`), 0)
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case rev, ok := <-ch:
			if !ok {
				t.Fatal("watch closed early")
			}
			if rev == last {
				cancel()
				// The channel closes after cancel.
				for range ch {
				}
				return
			}
			if rev > last {
				t.Fatalf("watch reported %d beyond the last write %d", rev, last)
			}
		case <-deadline:
			t.Fatalf("watch never reported revision %d", last)
		}
	}
}

// testConcurrent: 50 writers on one store.
func testConcurrent(t *testing.T, s store.Store) { NoLostUpdates(t, 50, 4, s) }

// NoLostUpdates runs writers (spread over the given stores, which may be replicas sharing
// one backend) that each read-modify-write one counter object `each` times with its
// revision: every acknowledged write must count (no lost update) and every failure must be
// a conflict.
func NoLostUpdates(t *testing.T, writers, each int, stores ...store.Store) {
	t.Helper()
	c := ctx(t)
	if _, err := store.Create(c, stores[0], model.KindSettings, "counter", []byte(`0`)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var acked, conflicts atomic.Int64
	for w := 0; w < writers; w++ {
		s := stores[w%len(stores)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				o, err := s.Get(c, model.KindSettings, "counter")
				if err != nil {
					t.Error(err)
					return
				}
				var n int
				fmt.Sscan(string(o.Data), &n)
				_, err = store.Put(c, s, model.KindSettings, "counter", []byte(fmt.Sprint(n+1)), o.Revision)
				if errors.Is(err, store.ErrConflict) {
					conflicts.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				acked.Add(1)
				done++
			}
		}()
	}
	wg.Wait()
	o, err := stores[len(stores)-1].Get(c, model.KindSettings, "counter")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(string(o.Data), &n)
	if int64(n) != acked.Load() || n != writers*each {
		t.Fatalf("counter %d, acknowledged writes %d, want %d: an update was lost", n, acked.Load(), writers*each)
	}
	t.Logf("%d conflicts resolved by retry", conflicts.Load())
}

// testLivenessNoRevision: touches and forgets bump no revision, reach no watcher and leave
// the model as it was.
func testLivenessNoRevision(t *testing.T, s store.Store) {
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	if _, err := store.Create(c, s, model.KindServices, "a", []byte(`{"id":"a"}`)); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Revision(c)
	ch := s.Watch(c)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; i < 1000; i++ {
		if err := s.Touch(c, "a", t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Forget(c, "a"); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Revision(c); after != before {
		t.Fatalf("1,000 touches moved the revision %d -> %d", before, after)
	}
	rev, all, err := s.Load(c)
	if err != nil || rev != before || len(all[model.KindServices]) != 1 {
		t.Fatalf("load after touches: %d %v %v", rev, all, err)
	}
	o, err := s.Get(c, model.KindServices, "a")
	if err != nil || string(o.Data) != `{"id":"a"}` {
		t.Fatalf("touch changed the object: %+v %v", o, err)
	}
	// A watcher sees no revision until the next real write, and then exactly that one.
	// (Redis's follower polls every 500 ms by default: wait past one poll.)
	select {
	case r := <-ch:
		t.Fatalf("watch reported revision %d for touches alone", r)
	case <-time.After(700 * time.Millisecond):
	}
	next, err := store.Put(c, s, model.KindTenants, "t", []byte(`{}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r != next {
			t.Fatalf("watch reported %d, want %d", r, next)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch missed the write after the touches")
	}
}

// testLivenessEntries: newest wins, reads by id and in bulk, forget, and ids made of bytes
// that are separators elsewhere (":", braces, NUL, "/") stay their own entries.
func testLivenessEntries(t *testing.T, s store.Store) {
	c := ctx(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	if err := s.Touch(c, "a", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(c, "a", t0); err != nil { // older: kept out
		t.Fatal(err)
	}
	if err := s.Touch(c, "", t0); err == nil {
		t.Fatal("an empty id was touched")
	}
	odd := []string{"a:live", "{agw}:live", "a\x00b", "obj/services", "a}", "..", "b"}
	for i, id := range odd {
		if err := s.Touch(c, id, t0.Add(time.Duration(i+1)*time.Second)); err != nil {
			t.Fatalf("touch %q: %v", id, err)
		}
	}
	got, err := s.LastSeen(c, "a", "missing", "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got["a"].Equal(t0.Add(time.Minute)) || !got["b"].Equal(t0.Add(7*time.Second)) {
		t.Fatalf("LastSeen(a, missing, b) = %v", got)
	}
	if _, ok := got["missing"]; ok {
		t.Fatal("an id never touched has an entry")
	}
	all, err := s.LastSeen(c)
	if err != nil || len(all) != 1+len(odd) {
		t.Fatalf("LastSeen() = %v %v", all, err)
	}
	for i, id := range odd {
		if !all[id].Equal(t0.Add(time.Duration(i+1) * time.Second)) {
			t.Fatalf("%q: %v, want %v (entries collide)", id, all[id], t0.Add(time.Duration(i+1)*time.Second))
		}
	}
	// No object of any kind appeared.
	if _, objs, err := s.Load(c); err != nil || len(objs) != 0 {
		t.Fatalf("touches made objects: %v %v", objs, err)
	}
	if err := s.Forget(c, "a", "never", "a:live"); err != nil {
		t.Fatal(err)
	}
	all, _ = s.LastSeen(c)
	if _, ok := all["a"]; ok || len(all) != len(odd)-1 {
		t.Fatalf("after forget: %v", all)
	}
	if err := s.Forget(c); err != nil {
		t.Fatalf("forget nothing: %v", err)
	}
}

// testSnapshotLiveness: Snapshot shows each instance's newest heartbeat, the stored one or
// the live one.
func testSnapshotLiveness(t *testing.T, s store.Store) {
	c := ctx(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, id := range []string{"old", "new"} {
		data := fmt.Sprintf(`{"id":%q,"name":"svc","host":"10.0.0.1","port":80,"last_heartbeat":%q}`, id, t0.Format(time.RFC3339Nano))
		if _, err := store.Create(c, s, model.KindServices, id, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Touch(c, "old", t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(c, "new", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	snap, errs, err := store.Snapshot(c, s)
	if err != nil || len(errs) > 0 || len(snap.Services) != 2 {
		t.Fatalf("snapshot: %v %v %v", snap, errs, err)
	}
	for _, sv := range snap.Services {
		want := t0
		if sv.ID == "new" {
			want = t0.Add(time.Hour)
		}
		if !sv.LastHeartbeat.Equal(want) {
			t.Fatalf("%s: last heartbeat %v, want %v", sv.ID, sv.LastHeartbeat, want)
		}
	}
}
