package pipeline

import (
	"context"

	"github.com/api-gateway/api-gateway/model"
)

// ApplySnapshot applies snap as Sync applies a revision loaded from the store (benchmarks
// feed revisions without a store's decoding in the measurement). It schedules no scavenge:
// a forced GC two seconds later would land inside a later iteration.
func (p *Pipeline) ApplySnapshot(ctx context.Context, snap *model.Snapshot) error {
	p.mu.Lock()
	p.scavengePending = true
	p.mu.Unlock()
	return p.apply(ctx, snap)
}
