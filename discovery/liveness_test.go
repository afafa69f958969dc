package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/discovery"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// The sweeper decides on the newest heartbeat, stored or live, and writes an instance only
// on a transition: kept alive by liveness alone it writes nothing; silent past its TTL it is
// marked expired once (its stored heartbeat brought up to the live one); expired past
// DeregisterAfter it is deleted and its liveness entry with it.
func TestSweeperReadsLiveness(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	t0 := clk.Now()
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(30 * time.Second), LastHeartbeat: t0})
	sw := &discovery.Sweeper{Store: st, Log: quietLog(), Now: clk.Now, DeregisterAfter: time.Hour}
	ctx := t.Context()

	for i := 0; i < 4; i++ { // heartbeats every 10 s for 40 s: past the stored heartbeat's TTL
		clk.Add(10 * time.Second)
		if err := st.Touch(ctx, "a", clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	lastBeat := clk.Now()
	rev, _ := st.Revision(ctx)
	if res, err := sw.Sweep(ctx); err != nil || res != (discovery.SweepResult{}) {
		t.Fatalf("sweep of a live instance: %+v %v", res, err)
	}
	if rev2, _ := st.Revision(ctx); rev2 != rev {
		t.Fatalf("sweep of a live instance wrote: %d -> %d", rev, rev2)
	}
	clk.Add(30 * time.Second) // exactly at the TTL of the last heartbeat
	if res, _ := sw.Sweep(ctx); res.Expired != 0 {
		t.Fatalf("expired at its TTL: %+v", res)
	}
	clk.Add(time.Second)
	if res, err := sw.Sweep(ctx); err != nil || res.Expired != 1 {
		t.Fatalf("past the TTL: %+v %v", res, err)
	}
	a := getSvc(t, st, "a")
	if a.Status != model.StatusExpired || !a.LastHeartbeat.Equal(lastBeat) {
		t.Fatalf("marked: %+v (last heartbeat want %v)", a, lastBeat)
	}
	rev, _ = st.Revision(ctx)
	if res, _ := sw.Sweep(ctx); res != (discovery.SweepResult{}) {
		t.Fatalf("second sweep: %+v", res)
	}
	if rev2, _ := st.Revision(ctx); rev2 != rev {
		t.Fatalf("idle sweep wrote: %d -> %d", rev, rev2)
	}
	clk.Add(time.Hour)
	if res, err := sw.Sweep(ctx); err != nil || res.Deleted != 1 || res.Forgotten != 1 {
		t.Fatalf("deregister: %+v %v", res, err)
	}
	if _, err := st.Get(ctx, model.KindServices, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("not deregistered: %v", err)
	}
	if live, _ := st.LastSeen(ctx); len(live) != 0 {
		t.Fatalf("liveness outlived the instance: %v", live)
	}
}

// A liveness entry whose instance is gone (deleted by the API or a file reload while a
// heartbeat was in flight) is removed by the next sweep; live instances keep theirs.
func TestSweeperForgetsLivenessOfRemovedInstances(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	ctx := t.Context()
	putSvc(t, st, &model.Service{ID: "b", Name: "svc", Host: "10.0.0.2", Port: 80, LastHeartbeat: clk.Now()})
	for _, id := range []string{"ghost", "b"} {
		if err := st.Touch(ctx, id, clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	rev, _ := st.Revision(ctx)
	sw := &discovery.Sweeper{Store: st, Log: quietLog(), Now: clk.Now}
	if res, err := sw.Sweep(ctx); err != nil || res.Forgotten != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	live, _ := st.LastSeen(ctx)
	if _, ok := live["b"]; !ok || len(live) != 1 {
		t.Fatalf("liveness after the sweep: %v", live)
	}
	if rev2, _ := st.Revision(ctx); rev2 != rev {
		t.Fatalf("forgetting liveness made a revision: %d -> %d", rev, rev2)
	}
}

// heartbeatDuringMark touches the instance's liveness right after the sweeper's write marks
// it expired: a heartbeat that read the instance before the mark (still serving, so it did
// not write it) and touched liveness after the sweeper read it.
type heartbeatDuringMark struct {
	store.Store
	clock *clock
	once  sync.Once
	t     *testing.T
}

func (h *heartbeatDuringMark) Txn(ctx context.Context, ops []store.Op) (uint64, error) {
	rev, err := h.Store.Txn(ctx, ops)
	if err == nil && len(ops) == 1 && ops[0].Kind == model.KindServices {
		var sv model.Service
		_ = json.Unmarshal(ops[0].Data, &sv)
		if sv.Status == model.StatusExpired {
			h.once.Do(func() {
				if err := h.Store.Touch(ctx, ops[0].ID, h.clock.Now()); err != nil {
					h.t.Error(err)
				}
			})
		}
	}
	return rev, err
}

func TestSweeperUndoesAnExpiryRacedByAHeartbeat(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(time.Second),
		Status: model.StatusHealthy, LastHeartbeat: clk.Now()})
	clk.Add(2 * time.Second)
	sw := &discovery.Sweeper{Store: &heartbeatDuringMark{Store: st, clock: clk, t: t}, Log: quietLog(), Now: clk.Now}
	res, err := sw.Sweep(t.Context())
	if err != nil || res.Expired != 0 || res.Revived != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	a := getSvc(t, st, "a")
	if a.Status != model.StatusHealthy || !a.Serving(clk.Now()) {
		t.Fatalf("a live instance was left expired: %+v", a)
	}
}

// An instance whose last heartbeat was written by a replica with a clock a year ahead, stored
// or in liveness, and which then stops, is not kept serving for that year: the sweeper takes
// it as seen at the sweep's time, and marks it expired once its TTL passed from there.
func TestSweeperTimeFromAClockAhead(t *testing.T) {
	for _, where := range []string{"stored", "liveness"} {
		t.Run(where, func(t *testing.T) {
			st := openBolt(t)
			clk := newClock()
			t0 := clk.Now()
			ahead := t0.Add(365 * 24 * time.Hour)
			sv := &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(30 * time.Second), LastHeartbeat: t0}
			if where == "stored" {
				sv.LastHeartbeat = ahead
			}
			putSvc(t, st, sv)
			if where == "liveness" {
				if err := st.Touch(t.Context(), "a", ahead); err != nil {
					t.Fatal(err)
				}
			}
			sw := &discovery.Sweeper{Store: st, Log: quietLog(), Now: clk.Now}
			if res, err := sw.Sweep(t.Context()); err != nil || res.Expired != 0 {
				t.Fatalf("first sweep: %+v %v", res, err)
			}
			clk.Add(31 * time.Second)
			if res, err := sw.Sweep(t.Context()); err != nil || res.Expired != 1 {
				t.Fatalf("31 s later, without a heartbeat: %+v %v", res, err)
			}
			if a := getSvc(t, st, "a"); a.Status != model.StatusExpired {
				t.Fatalf("not marked: %+v", a)
			}
		})
	}
}

// SERVICE_DEREGISTER_AFTER at its largest (2562047h) with an hour's TTL: their sum does not
// fit a time.Duration. An expired instance is kept (for those 292 years), not deleted at the
// next sweep because the sum wrapped to a negative duration.
func TestSweeperLargestDeregisterAfterKeepsExpiredInstances(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(time.Hour), LastHeartbeat: clk.Now()})
	sw := &discovery.Sweeper{Store: st, Log: quietLog(), Now: clk.Now, DeregisterAfter: 2562047 * time.Hour}
	clk.Add(time.Hour + time.Second)
	if res, err := sw.Sweep(t.Context()); err != nil || res.Expired != 1 {
		t.Fatalf("past the TTL: %+v %v", res, err)
	}
	clk.Add(time.Minute)
	if res, err := sw.Sweep(t.Context()); err != nil || res.Deleted != 0 {
		t.Fatalf("an instance expired a minute ago was deleted: %+v %v", res, err)
	}
	if a := getSvc(t, st, "a"); a.Status != model.StatusExpired {
		t.Fatalf("%+v", a)
	}
}

// An instance heartbeating through a replica whose clock runs a year ahead of the sweeper's
// (or a sweeper whose clock is behind) is alive: its liveness entry moves with each
// heartbeat, so it is never marked, and the sweeper moves no time back (the other replicas'
// rebuilds keep it). Once its heartbeats stop it is marked after its TTL.
func TestSweeperKeepsAnInstanceHeartbeatingFromAClockAhead(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	const skew = 365 * 24 * time.Hour
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(30 * time.Second), LastHeartbeat: clk.Now().Add(skew)})
	sw := &discovery.Sweeper{Store: st, Log: quietLog(), Now: clk.Now}
	ctx := t.Context()
	rev, _ := st.Revision(ctx)
	var last time.Time
	for i := 0; i < 30; i++ { // 5 minutes: a heartbeat every 10 s, a sweep every 5 s
		if i%2 == 0 {
			last = clk.Now().Add(skew)
			if err := st.Touch(ctx, "a", last); err != nil {
				t.Fatal(err)
			}
		}
		if res, err := sw.Sweep(ctx); err != nil || res != (discovery.SweepResult{}) {
			t.Fatalf("sweep %d of a live instance: %+v %v", i, res, err)
		}
		clk.Add(5 * time.Second)
	}
	if rev2, _ := st.Revision(ctx); rev2 != rev {
		t.Fatalf("sweeps of a live instance wrote: %d -> %d", rev, rev2)
	}
	if got, _ := st.LastSeen(ctx, "a"); !got["a"].Equal(last) {
		t.Fatalf("liveness moved: %v, want %v", got["a"], last)
	}
	for i := 0; i < 5; i++ { // silent: sweeps 10 s to 30 s after its last heartbeat (its TTL)
		if res, _ := sw.Sweep(ctx); res.Expired != 0 {
			t.Fatalf("marked %d s after its last heartbeat", 10+i*5)
		}
		clk.Add(5 * time.Second)
	}
	if res, err := sw.Sweep(ctx); err != nil || res.Expired != 1 {
		t.Fatalf("silent past its TTL: %+v %v", res, err)
	}
}
