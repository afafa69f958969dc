// Package pipeline carries each new store revision to the consumers: it debounces change
// notifications, loads and decodes the whole model once, lets every consumer build its new
// immutable tables from it (provision and validate), and only when all of them succeed swaps
// them all in (commit). A failure leaves every consumer on the last good revision, and says
// so: Ready reports the refusal (GET /ready answers 503 with it), the metrics
// api_gateway_config_revision_rejected and api_gateway_config_revisions_rejected_total count
// it, an error is logged, and every write waiting for that revision (WaitFor) is told.
//
// The API runs Check, the same whole-revision Prepare, on the revision a write would make
// before storing it, so a revision that cannot apply is refused as a write instead.
//
// The model is read once per revision: the pipeline's Translator turns it into one IR
// (ir.Config) and every RevisionConsumer (xds, ext_authz, the rate-limit service) compiles
// that same IR. The Translator reuses the translation of each route whose inputs did not
// change, so a WAF ban or a service heartbeat translates no route.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/translate"
)

// Revision is one model revision as the consumers read it: the IR, translated once for all
// of them, and the snapshot for the raw objects a consumer still reads as stored (API keys,
// tenants, JWT issuers).
type Revision struct {
	Snap *model.Snapshot
	IR   *ir.Config
}

// RevisionConsumer is a Consumer fed the revision's IR: the pipeline calls PrepareRevision
// (and, for a Check, CheckRevision when it is a RevisionChecker) instead of Prepare.
type RevisionConsumer interface {
	Consumer
	PrepareRevision(ctx context.Context, rev *Revision) (commit func(), err error)
}

// RevisionChecker is Checker for a RevisionConsumer.
type RevisionChecker interface {
	CheckRevision(ctx context.Context, rev *Revision) error
}

// Consumer turns a model snapshot into its own tables.
type Consumer interface {
	// Name is used in logs and errors.
	Name() string
	// Prepare builds the new state from snap without touching the live one, and returns a
	// commit function that swaps it in. Per-object problems (one bad route) are the
	// consumer's to report and skip; an error here rejects the whole revision.
	Prepare(ctx context.Context, snap *model.Snapshot) (commit func(), err error)
}

// Checker is a Consumer with a cheaper or side-effect-free way to run Prepare's checks
// without building what only commit needs. Check must refuse exactly what Prepare refuses.
// Consumers that are not Checkers are checked by calling Prepare and dropping its commit.
type Checker interface {
	Check(ctx context.Context, snap *model.Snapshot) error
}

// RefusedError says a revision was refused by one or more consumers and which revision is
// served instead.
type RefusedError struct {
	// Revision is the store revision that was refused.
	Revision uint64
	// Serving is the revision every consumer still serves (0: none yet).
	Serving uint64
	// Err names each consumer's reason ("xds: ...").
	Err error
	// KeysApplied: the API keys of the refused revision are served anyway (on the served
	// configuration): a revoked or deleted key stops working whatever else is broken.
	KeysApplied bool
}

// KeysInEffect tells whether the refused revision's API keys are served (see KeysApplied).
func (e *RefusedError) KeysInEffect() bool { return e.KeysApplied }

func (e *RefusedError) Error() string { return e.Summary() + ": " + e.Err.Error() }

// Summary says which revision was refused and which is served, without the reason (which
// names objects and their fields: not for unauthenticated readers).
func (e *RefusedError) Summary() string {
	served := fmt.Sprintf("revision %d is still served", e.Serving)
	if e.Serving == 0 {
		served = "no configuration is served yet"
	}
	return fmt.Sprintf("configuration revision %d was refused, %s", e.Revision, served)
}

func (e *RefusedError) Unwrap() error { return e.Err }

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

// ObjectChecker is a consumer's check of one object against the snapshot it would join,
// before it is stored: what that consumer would refuse or fail to apply, with the fields to
// fix (xds: the route's translation and Envoy build, conflicts, unknown services; ext_authz:
// CEL rules, WAF rule sets). The API, dry_run, the YAML file and `validate -f` call the
// pipeline's CheckObject, which runs every consumer's.
type ObjectChecker interface {
	CheckObject(obj model.Object, snap *model.Snapshot) model.FieldErrors
}

// CheckObject runs every consumer's object check (ObjectChecker) and returns all their
// problems at once.
func (p *Pipeline) CheckObject(obj model.Object, snap *model.Snapshot) model.FieldErrors {
	var errs model.FieldErrors
	for _, c := range p.consumers {
		if oc, ok := c.(ObjectChecker); ok {
			errs = append(errs, oc.CheckObject(obj, snap)...)
		}
	}
	return errs
}

// RevisionFunc adapts a function of the revision to a RevisionConsumer; C, when set, is its
// CheckRevision (else a check runs F and drops the commit).
type RevisionFunc struct {
	N string
	F func(ctx context.Context, rev *Revision) (func(), error)
}

// Name returns N.
func (c RevisionFunc) Name() string { return c.N }

// Prepare is not called by the pipeline (it calls PrepareRevision): a RevisionFunc reads
// the pipeline's IR only.
func (c RevisionFunc) Prepare(context.Context, *model.Snapshot) (func(), error) {
	return nil, fmt.Errorf("%s: reads the pipeline's translated revision only", c.N)
}

// PrepareRevision calls F.
func (c RevisionFunc) PrepareRevision(ctx context.Context, rev *Revision) (func(), error) {
	return c.F(ctx, rev)
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

	// prepMu serializes Prepare and Check: consumers were written for one Prepare at a time
	// (the pipeline's), and the API now checks writes from many requests.
	prepMu sync.Mutex

	mu      sync.Mutex
	applied uint64
	last    *model.Snapshot
	// refused is the newest revision's refusal while no later revision has applied.
	refused *RefusedError
	waiters []chan struct{}

	// translator makes the IR of each applied revision (memoized per route, prepMu held);
	// translate.Options of a check of an unstored revision.
	translator *translate.Translator
	topts      translate.Options

	rejected      prometheus.Gauge
	rejectedTotal prometheus.Counter

	scavengePending bool
}

// New returns a pipeline over the store; add consumers before Run.
func New(s store.Store, log *slog.Logger, consumers ...Consumer) *Pipeline {
	return &Pipeline{store: s, log: log, consumers: consumers, Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
		rejected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "api_gateway_config_revision_rejected",
			Help: "1 while the newest configuration revision is refused by a consumer (the previous one is still served), else 0."}),
		rejectedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "api_gateway_config_revisions_rejected_total",
			Help: "Configuration revisions refused by a consumer (xds, extauthz, ratelimit)."}),
	}
}

// Register adds the pipeline's metrics to reg.
func (p *Pipeline) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{p.rejected, p.rejectedTotal} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Add appends a consumer; call before Run.
func (p *Pipeline) Add(c Consumer) { p.consumers = append(p.consumers, c) }

// SetTranslate sets the options the IR is translated with (addresses from the environment);
// call before Run. Without it a RevisionConsumer gets an IR translated with zero options.
func (p *Pipeline) SetTranslate(o translate.Options) {
	p.prepMu.Lock()
	defer p.prepMu.Unlock()
	p.topts, p.translator = o, translate.NewTranslator(o)
}

// TranslateStats counts the route translations of the applied revisions (the memo's hits
// are Reused).
func (p *Pipeline) TranslateStats() translate.Stats {
	p.prepMu.Lock()
	defer p.prepMu.Unlock()
	if p.translator == nil {
		return translate.Stats{}
	}
	return p.translator.Stats()
}

// revision translates snap. A stored revision (memo) goes through the memoizing Translator:
// its objects carry the store's revisions, which name their content. A revision a write
// would make is translated afresh: its objects' revisions are not the store's yet. Called
// with prepMu held.
func (p *Pipeline) revision(snap *model.Snapshot, memo bool) (*Revision, error) {
	if p.translator == nil {
		p.translator = translate.NewTranslator(p.topts)
	}
	t := p.translator
	if !memo {
		t = translate.NewTranslator(p.topts)
	}
	cfg, err := t.Translate(snap)
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	return &Revision{Snap: snap, IR: cfg}, nil
}

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
	p.prepMu.Lock()
	commits, err := p.prepare(ctx, snap, true)
	p.prepMu.Unlock()
	var keyed *model.Snapshot
	var keysApplied bool
	if err != nil && ctx.Err() == nil {
		keyed, commits, keysApplied = p.prepareKeys(ctx, snap)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down: not a refusal
		}
		if keyed != nil {
			for _, commit := range commits {
				if commit != nil {
					commit()
				}
			}
			p.last = keyed
		}
		p.refused = &RefusedError{Revision: snap.Revision, Serving: p.applied, Err: err, KeysApplied: keysApplied}
		p.rejected.Set(1)
		p.rejectedTotal.Inc()
		p.log.Error("revision rejected; keeping the last good configuration", "revision", snap.Revision,
			"kept_revision", p.applied, "error", err.Error())
		p.wake()
		return p.refused
	}
	for _, commit := range commits {
		if commit != nil {
			commit()
		}
	}
	if p.refused != nil {
		p.log.Info("revision applied after a refused one", "revision", snap.Revision, "refused_revision", p.refused.Revision)
	}
	p.applied, p.last, p.refused = snap.Revision, snap, nil
	p.rejected.Set(0)
	p.wake()
	p.log.Debug("revision applied", "revision", snap.Revision, "took", time.Since(start).String())
	p.scheduleScavenge()
	return nil
}

// prepareKeys prepares, for a refused snap, the served configuration with snap's API keys:
// keys are only read by ext_authz and hold no reference another object needs, so taking
// them apart from the refused revision keeps what a key write promised (a revoked or deleted
// key stops working, a created one works) while another object keeps the revision refused.
// keyed is nil when there is nothing to commit; applied tells whether snap's keys are served
// (already, or once commits run). Called without locks.
func (p *Pipeline) prepareKeys(ctx context.Context, snap *model.Snapshot) (keyed *model.Snapshot, commits []func(), applied bool) {
	last := p.Current()
	if last == nil {
		return nil, nil, false // nothing served: every request is refused anyway
	}
	if sameObjects(last.APIKeys, snap.APIKeys) {
		return nil, nil, true
	}
	k := *last
	k.APIKeys = snap.APIKeys
	p.prepMu.Lock()
	commits, err := p.prepare(ctx, &k, true)
	p.prepMu.Unlock()
	if err != nil {
		p.log.Error("the refused revision's API keys could not be applied either", "revision", snap.Revision, "error", err.Error())
		return nil, nil, false
	}
	return &k, commits, true
}

// sameObjects tells whether two id-sorted lists hold the same stored versions.
func sameObjects[T model.Object](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetID() != b[i].GetID() || a[i].GetMeta().Revision != b[i].GetMeta().Revision {
			return false
		}
	}
	return true
}

// prepare runs every consumer's Prepare (or, when !commit, its Check) on snap; the error
// names each consumer that refused. Called with prepMu held.
func (p *Pipeline) prepare(ctx context.Context, snap *model.Snapshot, commit bool) ([]func(), error) {
	commits := make([]func(), 0, len(p.consumers))
	var errs []error
	var rev *Revision
	for _, c := range p.consumers {
		var fn func()
		var err error
		if rc, ok := c.(RevisionConsumer); ok {
			if rev == nil {
				if rev, err = p.revision(snap, commit); err != nil {
					return nil, err
				}
			}
			if ch, ok := c.(RevisionChecker); ok && !commit {
				err = ch.CheckRevision(ctx, rev)
			} else {
				fn, err = rc.PrepareRevision(ctx, rev)
			}
		} else if ch, ok := c.(Checker); ok && !commit {
			err = ch.Check(ctx, snap)
		} else {
			fn, err = c.Prepare(ctx, snap)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name(), err))
			continue
		}
		commits = append(commits, fn)
	}
	return commits, errors.Join(errs...)
}

// Check runs every consumer's whole-revision checks on snap, a revision that is not stored
// (what a write would make): the error is what apply would refuse it for. Nothing changes.
func (p *Pipeline) Check(ctx context.Context, snap *model.Snapshot) error {
	p.prepMu.Lock()
	defer p.prepMu.Unlock()
	_, err := p.prepare(ctx, snap, false)
	return err
}

// Translate is the IR the consumers would be given for snap, a revision that is not stored,
// translated as Check translates it (validate -f reads from it what the xDS flavors leave out).
func (p *Pipeline) Translate(snap *model.Snapshot) (*ir.Config, error) {
	p.prepMu.Lock()
	defer p.prepMu.Unlock()
	rev, err := p.revision(snap, false)
	if err != nil {
		return nil, err
	}
	return rev.IR, nil
}

// wake tells every WaitFor to look again. Called with p.mu held.
func (p *Pipeline) wake() {
	for _, w := range p.waiters {
		close(w)
	}
	p.waiters = nil
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
		var refused *RefusedError
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil && !errors.As(err, &refused) {
			p.log.Warn("sync failed", "revision", rev, "error", err.Error()) // a refusal is logged by apply
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

// LastError returns why the newest revision was refused (a *RefusedError), or nil once a
// later revision applies.
func (p *Pipeline) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused == nil {
		return nil
	}
	return p.refused
}

// Ready is the readiness check of the configuration: an error until a first revision applies
// and while the newest revision is refused (the gateway then serves an older configuration
// than the store holds: writes since then are not in effect).
func (p *Pipeline) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused != nil {
		return p.refused
	}
	if p.last == nil {
		return errors.New("no configuration applied yet")
	}
	return nil
}

// WaitFor blocks until revision rev (or a later one) is applied, or ctx ends. When the
// pipeline refuses a revision at or after rev before one applies, it returns that
// *RefusedError: rev is stored but not in effect.
func (p *Pipeline) WaitFor(ctx context.Context, rev uint64) error {
	for {
		p.mu.Lock()
		if p.applied >= rev {
			p.mu.Unlock()
			return nil
		}
		if p.refused != nil && p.refused.Revision >= rev {
			err := p.refused
			p.mu.Unlock()
			return err
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
