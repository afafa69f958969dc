package manage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// countingChecker refuses every revision holding a tenant named "poison" and counts checks.
type countingChecker struct{ checks atomic.Int64 }

func (c *countingChecker) Current() *model.Snapshot              { return &model.Snapshot{Revision: 1} }
func (c *countingChecker) WaitFor(context.Context, uint64) error { return nil }
func (c *countingChecker) Check(_ context.Context, s *model.Snapshot) error {
	c.checks.Add(1)
	for _, tn := range s.Tenants {
		if tn.ID == "poison" {
			return errors.New("poison")
		}
	}
	return nil
}

// One bad write among many arriving together costs a few extra checks, not one whole-model
// check per write: a client sending bad writes cannot make every other writer pay a build of
// its own. Only the bad write is refused.
func TestOneBadWriteInABatchCostsLogarithmicChecks(t *testing.T) {
	const n = 64
	cc := &countingChecker{}
	a := New(Options{Model: cc})
	reqs := make([]*checkReq, n)
	for i := range reqs {
		id := fmt.Sprintf("t%02d", i)
		if i == 37 {
			id = "poison"
		}
		reqs[i] = &checkReq{kind: model.KindTenants, obj: &model.Tenant{ID: id}, done: make(chan error, 1)}
	}
	a.checks.pending, a.checks.running = reqs, true
	a.checkBatches()
	for i, req := range reqs {
		err := <-req.done
		if (err != nil) != (i == 37) {
			t.Errorf("write %d (%s): %v", i, req.obj.GetID(), err)
		}
	}
	// 1 batch check + 2 per halving (log2(64) = 6).
	if got := cc.checks.Load(); got > 13 {
		t.Fatalf("%d checks for one bad write among %d", got, n)
	}
}

// ctxStore is a store that, like Redis, fails a transaction whose context has ended.
type ctxStore struct{ store.Store }

func (s ctxStore) Txn(ctx context.Context, ops []store.Op) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.Store.Txn(ctx, ops)
}

// refusingModel refuses every revision.
type refusingModel struct{ countingChecker }

func (*refusingModel) WaitFor(context.Context, uint64) error { return errors.New("refused") }

// A refused write is undone even when its client went away while it waited: the undo is
// the gateway's, not the request's, and a refused write left stored keeps every later
// revision refused.
func TestRefusedWriteIsUndoneAfterItsClientLeft(t *testing.T) {
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	st := ctxStore{bolt}
	a := New(Options{Store: st, Model: &refusingModel{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rev, err := store.Create(context.Background(), st, model.KindTenants, "acme", []byte(`{"id":"acme"}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest("POST", "/api/v1/management/tenants", nil).WithContext(ctx)
	if a.settle(httptest.NewRecorder(), r, model.KindTenants, "acme", rev, nil, nil) {
		t.Fatal("a refused write settled as applied")
	}
	if _, err := st.Get(context.Background(), model.KindTenants, "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused write is still stored: %v", err)
	}
}

// downStore is a store whose Ping fails the way Redis's does, naming its address.
type downStore struct{ store.Store }

func (downStore) Ping(context.Context) error {
	return errors.New("dial tcp 10.9.8.7:6379: connect: connection refused")
}

// /ready is an unauthenticated probe: a store error (which names the store's address) is
// shown with the admin token only.
func TestReadyShowsTheStoreErrorToTheAdminOnly(t *testing.T) {
	a := New(Options{Store: downStore{}, AdminTokenHash: HashToken("tok"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, tc := range []struct {
		auth string
		show bool
	}{{"", false}, {"Bearer wrong", false}, {"Bearer tok", true}} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/ready", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		a.ServeHTTP(w, r)
		if w.Code != 503 || strings.Contains(w.Body.String(), "10.9.8.7") != tc.show {
			t.Errorf("%q: %d %s", tc.auth, w.Code, w.Body.String())
		}
	}
}
