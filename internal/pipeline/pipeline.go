// Package pipeline carries each new store revision to the consumers: it debounces change
// notifications, loads and decodes the whole model once, lets every consumer build its new
// immutable tables from it (provision and validate), and only when all of them succeed swaps
// them all in (commit). A failure leaves every consumer on the last good revision.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/proto/model"
	"github.com/api-gateway/api-gateway/xds/store"
)

// Consumer turns a model snapshot into its own tables.
type Consumer interface {
	// Name is used in logs and errors.
	Name() string
	// Prepare builds the new state from snap without touching the live one, and returns a
	// commit function that swaps it in. Per-object problems (one bad route) are the
	// consumer's to report and skip; an error here rejects the whole revision.
	Prepare(ctx context.Context, snap *model.Snapshot) (commit func(), err error)
}

// ConsumerFunc adapts a function to Consumer.
type ConsumerFunc struct {
	N string
	F func(ctx context.Context, snap *model.Snapshot) (func(), error)
}

// Name returns N.
func (c ConsumerFunc) Name() string { return c.N }

// Prepare calls F.
func (c ConsumerFunc) Prepare(ctx context.Context, snap *model.Snapshot) (func(), error) {
	return c.F(ctx, snap)
}

// Pipeline runs the consumers on each revision.
type Pipeline struct {
	store     store.Store
	log       *slog.Logger
	consumers []Consumer
	// Debounce is how long to wait for more changes after one arrives; MaxDelay bounds the
	// total wait under a steady stream of writes.
	Debounce time.Duration
	MaxDelay time.Duration

	mu      sync.Mutex
	applied uint64
	last    *model.Snapshot
	lastErr error
	waiters []chan struct{}

	scavengePending bool
}

// New returns a pipeline over the store; add consumers before Run.
func New(s store.Store, log *slog.Logger, consumers ...Consumer) *Pipeline {
	return &Pipeline{store: s, log: log, consumers: consumers, Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond}
}

// Add appends a consumer; call before Run.
func (p *Pipeline) Add(c Consumer) { p.consumers = append(p.consumers, c) }

// Sync loads the current revision and applies it now (used at start, before serving).
func (p *Pipeline) Sync(ctx context.Context) error {
	snap, decodeErrs, err := store.Snapshot(ctx, p.store)
	if err != nil {
		return err
	}
	for _, e := range decodeErrs {
		p.log.Warn("object left out: it does not decode", "error", e.Error())
	}
	return p.apply(ctx, snap)
}

func (p *Pipeline) apply(ctx context.Context, snap *model.Snapshot) error {
	start := time.Now()
	commits := make([]func(), 0, len(p.consumers))
	var errs []error
	for _, c := range p.consumers {
		commit, err := c.Prepare(ctx, snap)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name(), err))
			continue
		}
		commits = append(commits, commit)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(errs) > 0 {
		p.lastErr = errors.Join(errs...)
		p.log.Error("revision rejected; keeping the last good configuration", "revision", snap.Revision,
			"kept_revision", p.applied, "error", p.lastErr.Error())
		return p.lastErr
	}
	for _, commit := range commits {
		if commit != nil {
			commit()
		}
	}
	p.applied, p.last, p.lastErr = snap.Revision, snap, nil
	for _, w := range p.waiters {
		close(w)
	}
	p.waiters = nil
	p.log.Debug("revision applied", "revision", snap.Revision, "took", time.Since(start).String())
	p.scheduleScavenge()
	return nil
}

// scavengeEvery bounds how often the heap left over from building a revision is returned to
// the OS. Every consumer rebuilds its tables per revision, so the heap briefly doubles; without
// this the runtime keeps that memory (RSS) long after the old tables are garbage.
const scavengeEvery = 2 * time.Second

// scheduleScavenge returns idle heap to the OS once the writes settle: at most one forced
// GC + scavenge per scavengeEvery, off the request and apply paths. Called with p.mu held.
func (p *Pipeline) scheduleScavenge() {
	if p.scavengePending {
		return
	}
	p.scavengePending = true
	time.AfterFunc(scavengeEvery, func() {
		p.mu.Lock()
		p.scavengePending = false
		p.mu.Unlock()
		debug.FreeOSMemory()
	})
}

// Run follows the store until ctx ends.
func (p *Pipeline) Run(ctx context.Context) {
	ch := p.store.Watch(ctx)
	for {
		var rev uint64
		var ok bool
		select {
		case <-ctx.Done():
			return
		case rev, ok = <-ch:
			if !ok {
				return
			}
		}
		deadline := time.NewTimer(p.MaxDelay)
	debounce:
		for {
			select {
			case <-ctx.Done():
				deadline.Stop()
				return
			case r, ok := <-ch:
				if !ok {
					break debounce
				}
				rev = r
			case <-time.After(p.Debounce):
				break debounce
			case <-deadline.C:
				break debounce
			}
		}
		deadline.Stop()
		if rev <= p.Applied() {
			continue
		}
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("sync failed", "revision", rev, "error", err.Error())
		}
	}
}

// Applied returns the last revision every consumer serves.
func (p *Pipeline) Applied() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// Current returns the last applied snapshot (nil before the first).
func (p *Pipeline) Current() *model.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// LastError returns why the newest revision was rejected, or nil.
func (p *Pipeline) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// WaitFor blocks until revision rev (or a later one) is applied, or ctx ends.
func (p *Pipeline) WaitFor(ctx context.Context, rev uint64) error {
	for {
		p.mu.Lock()
		if p.applied >= rev {
			p.mu.Unlock()
			return nil
		}
		w := make(chan struct{})
		p.waiters = append(p.waiters, w)
		p.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
