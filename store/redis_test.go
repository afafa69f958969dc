package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/store/storetest"
)

var prefixSeq atomic.Int64

// uniquePrefix gives each store its own key space on a shared redis-server.
func uniquePrefix() string { return fmt.Sprintf("t%d", prefixSeq.Add(1)) }

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError + 1}))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func openRedis(t *testing.T, url string) *store.Redis {
	t.Helper()
	s, err := store.OpenRedisStore(t.Context(), url, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRedisConformance(t *testing.T) {
	rs := testutil.StartRedis(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openRedis(t, "redis://"+rs.Addr+"?prefix="+uniquePrefix())
	})
}

// waitRevision reads ch until it reports want (or later), failing after limit.
func waitRevision(t *testing.T, ch <-chan uint64, want uint64, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(limit)
	for {
		select {
		case rev, ok := <-ch:
			if !ok {
				t.Fatal("watch closed")
			}
			if rev >= want {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("revision %d not seen within %s", want, limit)
		}
	}
}

// Two replicas (two stores, two connection pools) on one Redis: a write on either is seen
// by the other's watch within one second, and read back with the same revision.
func TestRedisReplicasFollowEachOther(t *testing.T) {
	rs := testutil.StartRedis(t)
	url := "redis://" + rs.Addr + "?prefix=" + uniquePrefix()
	a, b := openRedis(t, url), openRedis(t, url)
	ctx := t.Context()
	wa, wb := a.Watch(ctx), b.Watch(ctx)
	for i := 0; i < 3; i++ {
		writer, reader, ch := a, b, wb
		if i%2 == 1 {
			writer, reader, ch = b, a, wa
		}
		id := fmt.Sprint("r", i)
		rev, err := store.Create(ctx, writer, model.KindRoutes, id, []byte(`{"id":"`+id+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		waitRevision(t, ch, rev, time.Second)
		o, err := reader.Get(ctx, model.KindRoutes, id)
		if err != nil || o.Revision != rev {
			t.Fatalf("replica read %+v %v, want revision %d", o, err, rev)
		}
		if got, _ := reader.Revision(ctx); got != rev {
			t.Fatalf("replica revision %d, want %d", got, rev)
		}
	}
}

// A change whose message never arrives (written by something that does not publish) is
// still seen, through the revision poll.
func TestRedisPollCatchesMissedMessage(t *testing.T) {
	rs := testutil.StartRedis(t)
	p := uniquePrefix()
	s := openRedis(t, "redis://"+rs.Addr+"?poll_interval=50ms&prefix="+p)
	raw := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer raw.Close()
	ch := s.Watch(t.Context())
	rev, err := raw.Incr(t.Context(), "{"+p+"}:rev").Result()
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, ch, uint64(rev), time.Second)
}

// Writers on two replicas do read-modify-write on one object with its revision: no
// acknowledged update is lost, and the losers get ErrConflict.
func TestRedisConcurrentWritersOnTwoReplicas(t *testing.T) {
	rs := testutil.StartRedis(t)
	url := "redis://" + rs.Addr + "?prefix=" + uniquePrefix()
	replicas := []*store.Redis{openRedis(t, url), openRedis(t, url)}
	storetest.NoLostUpdates(t, 16, 10, replicas[0], replicas[1])
}

// Ops of one transaction see each other: create then delete of one id, put then a
// conditional put at the transaction's own revision is a conflict.
func TestRedisTxnSeesItsOwnOps(t *testing.T) {
	rs := testutil.StartRedis(t)
	for _, s := range []store.Store{openRedis(t, "redis://"+rs.Addr+"?prefix="+uniquePrefix()), openBolt(t)} {
		ctx := t.Context()
		_, err := s.Txn(ctx, []store.Op{
			{Type: store.OpCreate, Kind: model.KindRoutes, ID: "a", Data: []byte(`{}`)},
			{Type: store.OpDelete, Kind: model.KindRoutes, ID: "a"},
			{Type: store.OpCreate, Kind: model.KindRoutes, ID: "a", Data: []byte(`{"v":2}`)},
		})
		if err != nil {
			t.Fatalf("%T: %v", s, err)
		}
		o, err := s.Get(ctx, model.KindRoutes, "a")
		if err != nil || string(o.Data) != `{"v":2}` {
			t.Fatalf("%T: %+v %v", s, o, err)
		}
		_, err = s.Txn(ctx, []store.Op{
			{Type: store.OpDelete, Kind: model.KindRoutes, ID: "a"},
			{Type: store.OpDelete, Kind: model.KindRoutes, ID: "a"},
		})
		var oe *store.OpError
		if !errors.As(err, &oe) || oe.Index != 1 || !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%T: double delete: %v", s, err)
		}
	}
}

func openBolt(t *testing.T) store.Store {
	s, err := store.OpenBolt(t.TempDir() + "/gw.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Redis dies and comes back empty (no persistence in this test): calls fail while it is
// down, the store recovers without reopening, watchers hear of the next write, and that
// write's revision is above every revision seen before (no going backwards).
func TestRedisOutageAndRecovery(t *testing.T) {
	rs := testutil.StartRedis(t)
	s := openRedis(t, "redis://"+rs.Addr+"?poll_interval=50ms&dial_timeout=200ms&max_retries=0&prefix="+uniquePrefix())
	ctx := t.Context()
	ch := s.Watch(ctx)
	before, err := store.Create(ctx, s, model.KindRoutes, "r", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, ch, before, time.Second)
	rs.Stop()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := store.Create(short, s, model.KindRoutes, "x", []byte(`{}`)); err == nil {
		t.Fatal("write succeeded with redis down")
	}
	if err := s.Ping(short); err == nil {
		t.Fatal("ping succeeded with redis down")
	}
	cancel()
	rs.Restart()
	var after uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, err = store.Put(ctx, s, model.KindRoutes, "r2", []byte(`{}`), 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after <= before {
		t.Fatalf("revision went backwards after redis lost its data: %d -> %d", before, after)
	}
	waitRevision(t, ch, after, 2*time.Second)
	// A second replica opened now follows the first through the recovered pub/sub.
	b := openRedis(t, "redis://"+rs.Addr+"?prefix="+strings.Trim(s.Prefix(), "{}"))
	wb := b.Watch(ctx)
	rev, err := store.Put(ctx, s, model.KindRoutes, "r3", []byte(`{}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, wb, rev, time.Second)
}

func TestRedisClosed(t *testing.T) {
	rs := testutil.StartRedis(t)
	s, err := store.OpenRedis(t.Context(), "redis://"+rs.Addr+"?prefix="+uniquePrefix(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Watch(context.Background())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("watch channel open after close")
	}
	if _, err := s.Get(t.Context(), model.KindRoutes, "x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if _, err := store.Create(t.Context(), s, model.KindRoutes, "x", nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("txn after close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestOpenRedisGivesUp(t *testing.T) {
	port := testutil.FreePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := store.OpenRedis(ctx, fmt.Sprintf("redis://127.0.0.1:%d?dial_timeout=100ms", port), quietLog()); err == nil {
		t.Fatal("opened a store with no redis listening")
	}
}

// Liveness is one hash under the store's prefix: replicas on one prefix share it, a store on
// another prefix of the same server never sees its entries, and a touch writes nothing else.
func TestRedisLivenessSharedByReplicasOnlyUnderItsPrefix(t *testing.T) {
	rs := testutil.StartRedis(t)
	p := uniquePrefix()
	a := openRedis(t, "redis://"+rs.Addr+"?prefix="+p)
	b := openRedis(t, "redis://"+rs.Addr+"?prefix="+p)
	other := openRedis(t, "redis://"+rs.Addr+"?prefix="+p+"x")
	ctx := t.Context()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := a.Touch(ctx, "svc-1", t0); err != nil {
		t.Fatal(err)
	}
	if got, err := b.LastSeen(ctx, "svc-1"); err != nil || !got["svc-1"].Equal(t0) {
		t.Fatalf("replica b: %v %v", got, err)
	}
	if got, err := other.LastSeen(ctx); err != nil || len(got) != 0 {
		t.Fatalf("another prefix sees the entry: %v %v", got, err)
	}
	keys, err := a.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k != "{"+p+"}:live" {
			t.Fatalf("a touch wrote key %q", k)
		}
	}
	// An older touch from a replica whose heartbeat arrived late does not move it back.
	if err := b.Touch(ctx, "svc-1", t0.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.LastSeen(ctx, "svc-1"); !got["svc-1"].Equal(t0) {
		t.Fatalf("moved back: %v", got)
	}
}
