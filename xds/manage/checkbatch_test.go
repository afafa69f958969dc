package manage

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/api-gateway/api-gateway/proto/model"
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
