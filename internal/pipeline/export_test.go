package pipeline

import (
	"context"

	"github.com/api-gateway/api-gateway/model"
)

// ApplySnapshot applies snap as Sync applies a revision loaded from the store (benchmarks
// feed revisions without a store's decoding in the measurement).
func (p *Pipeline) ApplySnapshot(ctx context.Context, snap *model.Snapshot) error {
	return p.apply(ctx, snap)
}
