package pipeline_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

func TestAllConsumersCommitOrNone(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var aRev, bRev atomic.Uint64
	var failOn atomic.Uint64
	failOn.Store(^uint64(0))
	a := pipeline.ConsumerFunc{N: "a", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
		return func() { aRev.Store(s.Revision) }, nil
	}}
	b := pipeline.ConsumerFunc{N: "b", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
		if s.Revision == failOn.Load() {
			return nil, errors.New("refused")
		}
		return func() { bRev.Store(s.Revision) }, nil
	}}
	p := pipeline.New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), a, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	r1, _ := store.Put(ctx, st, model.KindTenants, "t1", []byte(`{"id":"t1"}`), 0)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := p.WaitFor(wctx, r1); err != nil {
		t.Fatal(err)
	}
	if aRev.Load() != r1 || bRev.Load() != r1 || p.Current().Revision != r1 || len(p.Current().Tenants) != 1 {
		t.Fatalf("after r1: a=%d b=%d", aRev.Load(), bRev.Load())
	}
	failOn.Store(r1 + 1)
	r2, _ := store.Put(ctx, st, model.KindTenants, "t2", []byte(`{"id":"t2"}`), 0)
	deadline := time.Now().Add(5 * time.Second)
	for p.LastError() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p.LastError() == nil || aRev.Load() != r1 || p.Applied() != r1 {
		t.Fatalf("a refused revision must leave every consumer on r1: err=%v a=%d applied=%d (r2=%d)", p.LastError(), aRev.Load(), p.Applied(), r2)
	}
	r3, _ := store.Put(ctx, st, model.KindTenants, "t3", []byte(`{"id":"t3"}`), 0)
	if err := p.WaitFor(wctx, r3); err != nil {
		t.Fatal(err)
	}
	if aRev.Load() != r3 || bRev.Load() != r3 || p.LastError() != nil {
		t.Fatalf("recovery: a=%d b=%d", aRev.Load(), bRev.Load())
	}
}

// refusing is a consumer that refuses every revision holding tenant "poison", as a consumer
// refuses a revision it cannot build; the others it takes.
func refusing(applied *atomic.Uint64) pipeline.ConsumerFunc {
	return pipeline.ConsumerFunc{N: "strict", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
		for _, tn := range s.Tenants {
			if tn.ID == "poison" {
				return nil, errors.New(`tenant "poison" cannot be built`)
			}
		}
		return func() { applied.Store(s.Revision) }, nil
	}}
}

// A refused revision is reported everywhere a refusal must be seen (Ready, LastError, the
// metrics, every write waiting for it) until a later revision applies.
func TestRefusedRevisionIsReportedUntilOneApplies(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var applied atomic.Uint64
	p := pipeline.New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), refusing(&applied))
	reg := prometheus.NewRegistry()
	if err := p.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Ready(); err == nil {
		t.Fatal("ready before any revision applied")
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	r1, _ := store.Put(ctx, st, model.KindTenants, "poison", []byte(`{"id":"poison"}`), 0)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	err = p.WaitFor(wctx, r1)
	var refused *pipeline.RefusedError
	if !errors.As(err, &refused) || refused.Revision != r1 || refused.Serving != r1-1 || !strings.Contains(err.Error(), `strict: tenant "poison"`) {
		t.Fatalf("WaitFor of a refused revision: %v", err)
	}
	if err := p.Ready(); !errors.As(err, &refused) {
		t.Fatalf("Ready while refused: %v", err)
	}
	if g := value(t, reg, "api_gateway_config_revision_rejected"); g != 1 {
		t.Fatalf("rejected gauge %v", g)
	}
	if n := value(t, reg, "api_gateway_config_revisions_rejected_total"); n != 1 {
		t.Fatalf("rejected counter %v", n)
	}
	rd, _ := store.Delete(ctx, st, model.KindTenants, "poison", 0)
	if err := p.WaitFor(wctx, rd); err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil || p.LastError() != nil || applied.Load() != rd {
		t.Fatalf("after a good revision: ready=%v last=%v applied=%d", err, p.LastError(), applied.Load())
	}
	if g := value(t, reg, "api_gateway_config_revision_rejected"); g != 0 {
		t.Fatalf("rejected gauge %v after recovery", g)
	}
}

// Check refuses what apply would refuse and changes nothing: no commit runs, no refusal is
// recorded.
func TestCheckRefusesWithoutApplying(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var applied atomic.Uint64
	p := pipeline.New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), refusing(&applied))
	ctx := context.Background()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := applied.Load()
	bad := &model.Snapshot{Revision: 9, Tenants: []*model.Tenant{{ID: "poison"}}, Settings: &model.Settings{ID: model.SettingsID}}
	if err := p.Check(ctx, bad); err == nil || !strings.Contains(err.Error(), "strict:") {
		t.Fatalf("Check of a revision the consumer refuses: %v", err)
	}
	good := &model.Snapshot{Revision: 9, Tenants: []*model.Tenant{{ID: "fine"}}, Settings: &model.Settings{ID: model.SettingsID}}
	if err := p.Check(ctx, good); err != nil {
		t.Fatal(err)
	}
	if applied.Load() != before || p.LastError() != nil || p.Ready() != nil {
		t.Fatalf("Check changed state: applied=%d last=%v", applied.Load(), p.LastError())
	}
}

// value reads an unlabelled gauge or counter from reg.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// objectChecking is a consumer whose object check refuses objects with its name as id.
type objectChecking struct{ pipeline.ConsumerFunc }

func (c objectChecking) CheckObject(obj model.Object, _ *model.Snapshot) model.FieldErrors {
	var errs model.FieldErrors
	if obj.GetID() == c.N {
		errs.Add("id", "refused by %s", c.N)
	}
	return errs
}

// CheckObject asks every consumer that checks objects and returns every problem at once.
func TestCheckObjectAsksEveryConsumer(t *testing.T) {
	noop := func(context.Context, *model.Snapshot) (func(), error) { return func() {}, nil }
	p := pipeline.New(nil, slog.New(slog.DiscardHandler),
		objectChecking{pipeline.ConsumerFunc{N: "a", F: noop}},
		pipeline.ConsumerFunc{N: "plain", F: noop},
		objectChecking{pipeline.ConsumerFunc{N: "b", F: noop}})
	if errs := p.CheckObject(&model.Tenant{ID: "c"}, &model.Snapshot{}); len(errs) != 0 {
		t.Fatalf("refused: %v", errs)
	}
	for _, id := range []string{"a", "b"} {
		errs := p.CheckObject(&model.Tenant{ID: id}, &model.Snapshot{})
		if len(errs) != 1 || !strings.Contains(errs.Error(), "refused by "+id) {
			t.Fatalf("%s: %v", id, errs)
		}
	}
}
