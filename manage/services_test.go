package manage_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// testClock is a settable clock for the API.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// snapRecorder is a pipeline consumer that keeps the last snapshot it was given.
type snapRecorder struct {
	mu   sync.Mutex
	last *model.Snapshot
	n    int
}

func (s *snapRecorder) Name() string { return "recorder" }
func (s *snapRecorder) Prepare(_ context.Context, snap *model.Snapshot) (func(), error) {
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.last = snap
		s.n++
	}, nil
}
func (s *snapRecorder) get() (*model.Snapshot, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.n
}

// newClockEnv is newEnv with the API's clock and a consumer that records snapshots.
func newClockEnv(t *testing.T) (*env, *testClock, *snapRecorder) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	rec := &snapRecorder{}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	pipe := pipeline.New(st, log, rec)
	api := manage.New(manage.Options{Store: st, Model: pipe, Keys: sha256Minter{}, Logger: log,
		AdminTokenHash: manage.HashToken(token), Now: clk.Now})
	if err := pipe.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go pipe.Run(ctx)
	t.Cleanup(cancel)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, store: st, api: api, pipe: pipe}, clk, rec
}

func (e *env) revision() uint64 {
	e.t.Helper()
	rev, err := e.store.Revision(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return rev
}

func lastHeartbeat(t *testing.T, body map[string]any) time.Time {
	t.Helper()
	s, _ := body["last_heartbeat"].(string)
	hb, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("last_heartbeat %q: %v", s, err)
	}
	return hb
}

// A flood of heartbeats for a serving instance is no revision: the store revision and the
// consumers' rebuild count stay where they were, while GET, the list and the next revision's
// snapshot all show the newest heartbeat.
func TestHeartbeatOfServingInstanceIsNoRevision(t *testing.T) {
	e, clk, rec := newClockEnv(t)
	r := e.do("POST", "/api/v1/management/services", `{"id":"users-1","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`)
	if r.code != 201 {
		t.Fatalf("register: %d %s", r.code, r.raw)
	}
	before := e.revision()
	_, builds := rec.get()
	for i := 0; i < 1000; i++ {
		clk.Add(20 * time.Millisecond) // 20 s in all: every heartbeat within the 30 s TTL
		hb := e.do("PUT", "/api/v1/management/services/users-1/heartbeat", nil)
		if hb.code != 200 {
			t.Fatalf("heartbeat %d: %d %s", i, hb.code, hb.raw)
		}
	}
	if after := e.revision(); after != before {
		t.Fatalf("1,000 heartbeats moved the store revision %d -> %d", before, after)
	}
	if _, n := rec.get(); n != builds {
		t.Fatalf("1,000 heartbeats made %d rebuilds", n-builds)
	}
	want := clk.Now()
	g := e.do("GET", "/api/v1/management/services/users-1", nil)
	if g.code != 200 || !lastHeartbeat(t, g.body).Equal(want) {
		t.Fatalf("get: %d %s, want last_heartbeat %v", g.code, g.raw, want)
	}
	l := e.do("GET", "/api/v1/management/services", nil)
	items, _ := l.body["items"].([]any)
	if len(items) != 1 || !lastHeartbeat(t, items[0].(map[string]any)).Equal(want) {
		t.Fatalf("list: %s", l.raw)
	}
	// 40 s after registering, the stored object is past its TTL; its liveness is not. The
	// next revision (any write) must keep it serving.
	clk.Add(20 * time.Second)
	if hb := e.do("PUT", "/api/v1/management/services/users-1/heartbeat", nil); hb.code != 200 {
		t.Fatalf("heartbeat: %d", hb.code)
	}
	if w := e.do("POST", "/api/v1/management/tenants", `{"id":"acme","name":"Acme"}`); w.code != 201 {
		t.Fatalf("tenant: %d %s", w.code, w.raw)
	}
	snap, _ := rec.get()
	if snap == nil || len(snap.Services) != 1 || !snap.Services[0].Serving(clk.Now()) {
		t.Fatalf("the revision after the heartbeats drops the live instance: %+v", snap)
	}
}

// An instance out of the load balancing for its TTL comes back with a heartbeat, which is
// then a revision: when the sweeper marked it expired, and when its TTL ran out unswept.
func TestHeartbeatOfExpiredInstanceIsARevision(t *testing.T) {
	e, clk, _ := newClockEnv(t)
	if r := e.do("POST", "/api/v1/management/services", `{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`); r.code != 201 {
		t.Fatalf("register: %d %s", r.code, r.raw)
	}
	clk.Add(31 * time.Second) // past the TTL, not swept
	before := e.revision()
	hb := e.do("PUT", "/api/v1/management/services/a/heartbeat", nil)
	if hb.code != 200 || e.revision() != before+1 {
		t.Fatalf("heartbeat after the TTL: %d %s, revision %d -> %d", hb.code, hb.raw, before, e.revision())
	}
	// The sweeper's mark (written as the sweeper writes it).
	raw, _ := e.store.Get(t.Context(), model.KindServices, "a")
	marked := []byte(`{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s","status":"expired"}`)
	if _, err := store.Put(t.Context(), e.store, model.KindServices, "a", marked, raw.Revision); err != nil {
		t.Fatal(err)
	}
	before = e.revision()
	hb = e.do("PUT", "/api/v1/management/services/a/heartbeat", nil)
	if hb.code != 200 || e.revision() != before+1 || hb.body["status"] != nil {
		t.Fatalf("heartbeat of an expired instance: %d %s, revision %d -> %d", hb.code, hb.raw, before, e.revision())
	}
	g := e.do("GET", "/api/v1/management/services/a", nil)
	if g.body["status"] != nil || !lastHeartbeat(t, g.body).Equal(clk.Now()) {
		t.Fatalf("after coming back: %s", g.raw)
	}
	// And serving again, the next one is no revision.
	before = e.revision()
	clk.Add(time.Second)
	if hb := e.do("PUT", "/api/v1/management/services/a/heartbeat", nil); hb.code != 200 || e.revision() != before {
		t.Fatalf("heartbeat of a serving instance: %d, revision %d -> %d", hb.code, before, e.revision())
	}
}

// Heartbeats cannot grow the liveness keyspace from outside: an unknown id, or one made of
// bytes that are separators in the store's keys, is a 404 that records nothing.
func TestHeartbeatUnknownIDRecordsNothing(t *testing.T) {
	e, _, _ := newClockEnv(t)
	if r := e.do("POST", "/api/v1/management/services", `{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`); r.code != 201 {
		t.Fatalf("register: %d", r.code)
	}
	before := e.revision()
	for _, id := range []string{"nope", "a%00", "a%3Alive", "%7Bagw%7D%3Alive", "a%2Fb", "..%2Fa", "a%20", "%E2%80%AE"} {
		hb := e.do("PUT", "/api/v1/management/services/"+id+"/heartbeat", nil)
		if hb.code != 404 && hb.code != 400 {
			t.Fatalf("heartbeat %q: %d %s", id, hb.code, hb.raw)
		}
	}
	live, err := e.store.LastSeen(t.Context())
	if err != nil || len(live) != 0 {
		t.Fatalf("liveness after heartbeats of unknown ids: %v %v", live, err)
	}
	if e.revision() != before {
		t.Fatal("a heartbeat of an unknown id made a revision")
	}
}

// Deregistering removes the instance's liveness entry.
func TestDeregisterForgetsLiveness(t *testing.T) {
	e, _, _ := newClockEnv(t)
	if r := e.do("POST", "/api/v1/management/services", `{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`); r.code != 201 {
		t.Fatalf("register: %d", r.code)
	}
	if hb := e.do("PUT", "/api/v1/management/services/a/heartbeat", nil); hb.code != 200 {
		t.Fatalf("heartbeat: %d", hb.code)
	}
	if live, _ := e.store.LastSeen(t.Context(), "a"); len(live) != 1 {
		t.Fatalf("no liveness entry after a heartbeat: %v", live)
	}
	if d := e.do("DELETE", "/api/v1/management/services/a", nil); d.code != 204 {
		t.Fatalf("deregister: %d", d.code)
	}
	if live, _ := e.store.LastSeen(t.Context()); len(live) != 0 {
		t.Fatalf("liveness entry outlived its instance: %v", live)
	}
	if hb := e.do("PUT", "/api/v1/management/services/a/heartbeat", nil); hb.code != 404 {
		t.Fatalf("heartbeat after deregister: %d", hb.code)
	}
}

// duringTouch runs fn once, just before the first liveness touch: what another replica (the
// sweeper, an operator's DELETE) does between the heartbeat's read and its touch.
type duringTouch struct {
	store.Store
	once sync.Once
	fn   func(ctx context.Context)
}

func (d *duringTouch) Touch(ctx context.Context, id string, t time.Time) error {
	d.once.Do(func() { d.fn(ctx) })
	return d.Store.Touch(ctx, id, t)
}

func newRacingEnv(t *testing.T, fn func(st store.Store) func(ctx context.Context)) (*env, store.Store) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	racing := &duringTouch{Store: st, fn: fn(st)}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	pipe := pipeline.New(st, log)
	api := manage.New(manage.Options{Store: racing, Model: pipe, Keys: sha256Minter{}, Logger: log, AdminTokenHash: manage.HashToken(token)})
	if err := pipe.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go pipe.Run(ctx)
	t.Cleanup(cancel)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, store: st, api: api, pipe: pipe}, st
}

// The sweeper marks the instance expired after the heartbeat read it serving and before
// the heartbeat's touch: the heartbeat reads it again after touching and writes it back.
func TestHeartbeatWinsOverAnExpiryMarkedMeanwhile(t *testing.T) {
	e, st := newRacingEnv(t, func(st store.Store) func(ctx context.Context) {
		return func(ctx context.Context) {
			raw, err := st.Get(ctx, model.KindServices, "a")
			if err != nil {
				t.Error(err)
				return
			}
			marked := []byte(`{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s","status":"expired"}`)
			if _, err := store.Put(ctx, st, model.KindServices, "a", marked, raw.Revision); err != nil {
				t.Error(err)
			}
		}
	})
	if r := e.do("POST", "/api/v1/management/services", `{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`); r.code != 201 {
		t.Fatalf("register: %d %s", r.code, r.raw)
	}
	hb := e.do("PUT", "/api/v1/management/services/a/heartbeat", nil)
	if hb.code != 200 || hb.body["status"] != nil {
		t.Fatalf("heartbeat: %d %s", hb.code, hb.raw)
	}
	raw, _ := st.Get(t.Context(), model.KindServices, "a")
	var s model.Service
	_ = json.Unmarshal(raw.Data, &s)
	if s.Status != "" {
		t.Fatalf("a live instance was left %q", s.Status)
	}
}

// The instance is deleted after the heartbeat read it and before its touch: the heartbeat
// answers 404 and leaves no liveness entry behind.
func TestHeartbeatRacingADeleteLeavesNoEntry(t *testing.T) {
	e, st := newRacingEnv(t, func(st store.Store) func(ctx context.Context) {
		return func(ctx context.Context) {
			if _, err := store.Delete(ctx, st, model.KindServices, "a", 0); err != nil {
				t.Error(err)
			}
		}
	})
	if r := e.do("POST", "/api/v1/management/services", `{"id":"a","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`); r.code != 201 {
		t.Fatalf("register: %d %s", r.code, r.raw)
	}
	if hb := e.do("PUT", "/api/v1/management/services/a/heartbeat", nil); hb.code != 404 {
		t.Fatalf("heartbeat of an instance deleted meanwhile: %d %s", hb.code, hb.raw)
	}
	if live, _ := st.LastSeen(t.Context()); len(live) != 0 {
		t.Fatalf("entry left behind: %v", live)
	}
}
