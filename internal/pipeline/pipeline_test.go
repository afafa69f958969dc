package pipeline_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/proto/model"
	"github.com/api-gateway/api-gateway/xds/store"
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
