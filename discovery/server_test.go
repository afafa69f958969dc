package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/discovery"
	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openBolt(t *testing.T) store.Store {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func putSvc(t *testing.T, st store.Store, sv *model.Service) uint64 {
	t.Helper()
	data, _ := json.Marshal(sv)
	rev, err := store.Put(t.Context(), st, model.KindServices, sv.ID, data, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func getSvc(t *testing.T, st store.Store, id string) *model.Service {
	t.Helper()
	raw, err := st.Get(t.Context(), model.KindServices, id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	sv := &model.Service{}
	if err := json.Unmarshal(raw.Data, sv); err != nil {
		t.Fatal(err)
	}
	sv.Revision = raw.Revision
	return sv
}

func TestSweeperExpiresAndDeregisters(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	t0 := clk.Now()
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(30 * time.Second), LastHeartbeat: t0})
	putSvc(t, st, &model.Service{ID: "b", Name: "svc", Host: "10.0.0.2", Port: 80, TTL: model.Duration(90 * time.Second), LastHeartbeat: t0})
	putSvc(t, st, &model.Service{ID: "static", Name: "svc", Host: "10.0.0.3", Port: 80, LastHeartbeat: t0})
	sw := &discovery.Sweeper{Store: st, Log: quietLog(), Now: clk.Now, DeregisterAfter: time.Hour}

	clk.Add(30 * time.Second) // exactly at the TTL: not expired yet
	if res, err := sw.Sweep(t.Context()); err != nil || res.Expired != 0 {
		t.Fatalf("at TTL: %+v %v", res, err)
	}
	clk.Add(time.Second)
	res, err := sw.Sweep(t.Context())
	if err != nil || res.Expired != 1 {
		t.Fatalf("after TTL: %+v %v", res, err)
	}
	a := getSvc(t, st, "a")
	if a.Status != model.StatusExpired || a.Serving(clk.Now()) {
		t.Fatalf("a: %+v", a)
	}
	if b := getSvc(t, st, "b"); b.Status != "" || !b.Serving(clk.Now()) {
		t.Fatalf("b expired early: %+v", b)
	}
	// A second sweep writes nothing more (no revision churn).
	rev, _ := st.Revision(t.Context())
	if res, err := sw.Sweep(t.Context()); err != nil || res.Expired != 0 {
		t.Fatalf("second sweep: %+v %v", res, err)
	}
	if rev2, _ := st.Revision(t.Context()); rev2 != rev {
		t.Fatalf("idle sweep wrote: %d -> %d", rev, rev2)
	}
	// After TTL + DeregisterAfter, the expired instance goes; the static one never does.
	clk.Add(2 * time.Hour)
	res, err = sw.Sweep(t.Context())
	if err != nil || res.Deleted != 1 || res.Expired != 1 {
		t.Fatalf("late sweep: %+v %v", res, err)
	}
	if _, err := st.Get(t.Context(), model.KindServices, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a not deregistered: %v", err)
	}
	if getSvc(t, st, "b").Status != model.StatusExpired {
		t.Fatal("b not expired")
	}
	if s := getSvc(t, st, "static"); s.Status != "" {
		t.Fatalf("instance without TTL expired: %+v", s)
	}
}

// racingStore writes a heartbeat to the instance right after the sweeper lists it, as a
// replica serving the heartbeat would; the sweeper's conditional write must lose.
type racingStore struct {
	store.Store
	once  sync.Once
	clock *clock
	t     *testing.T
}

func (r *racingStore) List(ctx context.Context, k model.Kind) ([]model.RawObject, error) {
	out, err := r.Store.List(ctx, k)
	r.once.Do(func() {
		sv := getSvc(r.t, r.Store, "a")
		rev := sv.Revision
		sv.LastHeartbeat, sv.Revision = r.clock.Now(), 0
		data, _ := json.Marshal(sv)
		if _, err := store.Put(ctx, r.Store, model.KindServices, "a", data, rev); err != nil {
			r.t.Error(err)
		}
	})
	return out, err
}

func TestSweeperLosesToHeartbeat(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(time.Second), LastHeartbeat: clk.Now()})
	clk.Add(2 * time.Second)
	sw := &discovery.Sweeper{Store: &racingStore{Store: st, clock: clk, t: t}, Log: quietLog(), Now: clk.Now}
	res, err := sw.Sweep(t.Context())
	if err != nil || res.Expired != 0 || res.Conflicts != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if a := getSvc(t, st, "a"); a.Status != "" || !a.Serving(clk.Now()) {
		t.Fatalf("heartbeat lost: %+v", a)
	}
}

func TestProberFlipsStatus(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer up.Close()
	st := openBolt(t)
	clk := newClock()
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "127.0.0.1", Port: 80, Health: up.URL + "/health",
		HealthCk: &model.ServiceHealth{Interval: model.Duration(10 * time.Second)}})
	putSvc(t, st, &model.Service{ID: "nocheck", Name: "svc", Host: "127.0.0.1", Port: 81})
	p := &discovery.Prober{Store: st, Log: quietLog(), Now: clk.Now}

	res, err := p.Round(t.Context())
	if err != nil || res.Probed != 1 || res.Failed != 0 || res.MarkedDown+res.MarkedUp != 0 {
		t.Fatalf("healthy round: %+v %v", res, err)
	}
	// Not due again before its interval.
	clk.Add(5 * time.Second)
	if res, _ := p.Round(t.Context()); res.Probed != 0 {
		t.Fatalf("probed before the interval: %+v", res)
	}
	healthy.Store(false)
	clk.Add(5 * time.Second)
	if res, _ := p.Round(t.Context()); res.Failed != 1 || res.MarkedDown != 0 {
		t.Fatalf("first failure must not flip (threshold 2): %+v", res)
	}
	clk.Add(10 * time.Second)
	if res, _ := p.Round(t.Context()); res.MarkedDown != 1 {
		t.Fatalf("second failure: %+v", res)
	}
	if a := getSvc(t, st, "a"); a.Status != model.StatusUnhealthy || a.Serving(clk.Now()) {
		t.Fatalf("a: %+v", a)
	}
	healthy.Store(true)
	clk.Add(10 * time.Second)
	if res, _ := p.Round(t.Context()); res.MarkedUp != 1 {
		t.Fatalf("recovery: %+v", res)
	}
	if a := getSvc(t, st, "a"); a.Status != model.StatusHealthy || !a.Serving(clk.Now()) {
		t.Fatalf("a: %+v", a)
	}
}

func TestProberTimeout(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	st := openBolt(t)
	putSvc(t, st, &model.Service{ID: "a", Name: "svc", Host: "127.0.0.1", Port: 80, Health: slow.URL,
		HealthCk: &model.ServiceHealth{Timeout: model.Duration(50 * time.Millisecond)}})
	p := &discovery.Prober{Store: st, Log: quietLog(), UnhealthyThreshold: 1}
	start := time.Now()
	res, err := p.Round(t.Context())
	if err != nil || res.MarkedDown != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("probe ignored its timeout: %s", el)
	}
}

func TestRedisLease(t *testing.T) {
	rs := testutil.StartRedis(t)
	st, err := store.OpenRedisStore(t.Context(), "redis://"+rs.Addr, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := discovery.NewRedisLease(st.Client(), "{agw}:lease:test", 150*time.Millisecond)
	b := discovery.NewRedisLease(st.Client(), "{agw}:lease:test", 150*time.Millisecond)
	if a.Owner() == b.Owner() {
		t.Fatal("owners must differ")
	}
	ctx := t.Context()
	if ok, err := a.Hold(ctx); !ok || err != nil {
		t.Fatalf("a: %v %v", ok, err)
	}
	if ok, _ := b.Hold(ctx); ok {
		t.Fatal("b took a held lease")
	}
	if ok, _ := a.Hold(ctx); !ok {
		t.Fatal("a could not renew")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.Hold(ctx); !ok {
		t.Fatal("b's release dropped a's lease")
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Hold(ctx); !ok {
		t.Fatal("b could not take a released lease")
	}
	// b stops renewing: a gets it after the TTL.
	eventually(t, 2*time.Second, "lease expiry", func() bool { ok, _ := a.Hold(ctx); return ok })
}

// Two replicas share a Redis store and the lease: exactly one sweeps; an expired instance
// is written expired once and both replicas see it; when the leader stops, the other takes
// over at once (the lease is released, not left to expire).
func TestServersShareTheWork(t *testing.T) {
	rs := testutil.StartRedis(t)
	clk := newClock()
	type replica struct {
		st     *store.Redis
		reg    *prometheus.Registry
		srv    *discovery.Server
		cancel context.CancelFunc
		done   chan struct{}
	}
	var reps []*replica
	for i := 0; i < 2; i++ {
		st, err := store.OpenRedisStore(t.Context(), "redis://"+rs.Addr, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		reg := prometheus.NewRegistry()
		srv, err := discovery.NewServer(discovery.ServerOptions{Store: st, Log: quietLog(), Reg: reg,
			Lease:         discovery.NewRedisLease(st.Client(), st.Prefix()+":lease:discovery", 5*time.Second),
			SweepInterval: 20 * time.Millisecond, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{st: st, reg: reg, srv: srv, cancel: cancel, done: make(chan struct{})}
		go func() { srv.Run(ctx); close(r.done) }()
		t.Cleanup(func() { cancel(); <-r.done })
		reps = append(reps, r)
	}
	leaderGauge := func(r *replica) float64 { return metricValue(r.reg, "api_gateway_discovery_leader") }
	eventually(t, 2*time.Second, "one leader", func() bool { return leaderGauge(reps[0])+leaderGauge(reps[1]) == 1 })

	putSvc(t, reps[0].st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(10 * time.Second), LastHeartbeat: clk.Now()})
	clk.Add(11 * time.Second)
	for _, r := range reps {
		eventually(t, 2*time.Second, "expiry seen by every replica", func() bool {
			return getSvc(t, r.st, "a").Status == model.StatusExpired
		})
	}
	var expired float64
	for _, r := range reps {
		expired += metricValue(r.reg, "api_gateway_discovery_expired_total")
	}
	if expired != 1 {
		t.Fatalf("instance expired %v times, want once", expired)
	}

	leader, other := reps[0], reps[1]
	if leaderGauge(leader) != 1 {
		leader, other = other, leader
	}
	leader.cancel()
	<-leader.done
	eventually(t, time.Second, "takeover", func() bool { return leaderGauge(other) == 1 })
}

// metricValue reads one unlabeled counter or gauge from a registry (-1 when absent).
func metricValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
