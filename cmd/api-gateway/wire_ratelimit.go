package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/ratelimit"
)

// wireRateLimit starts the rate-limit service: counters in memory on one node, in Redis when
// REDIS_URL is set; rules rebuilt from each model revision (the same translation that emits
// the routes' rate-limit actions) and swapped in atomically.
func (a *app) wireRateLimit() error {
	st, err := ratelimit.NewStore(a.cfg.RedisURL, ratelimit.RedisOptions{}, a.cfg.RateLimitReserve)
	if err != nil {
		return err
	}
	switch {
	case a.cfg.RateLimitReserve > 0 && a.cfg.RedisURL != "":
		a.log.Info("fixed-window reservations on: busy counters are admitted from units reserved in Redis",
			"component", "ratelimit", "hold", a.cfg.RateLimitReserve.String())
	case a.cfg.RateLimitReserve > 0:
		a.log.Warn("RATE_LIMIT_RESERVE has no effect without REDIS_URL (the memory store needs no round trip)", "component", "ratelimit")
	}
	svc, err := ratelimit.New(ratelimit.Options{Logger: a.log.With("component", "ratelimit"), Registerer: a.reg, Store: st})
	if err != nil {
		st.Close()
		return err
	}
	a.closers = append(a.closers, svc.Close)
	svc.Register(a.grpc)
	a.pipe.Add(newRateLimitConsumer(svc, a.log.With("component", "ratelimit")))
	return nil
}

// rateLimitConsumer feeds the rate-limit service the rules of each revision's IR and owns the
// service's checks. Per object (CheckObject: the API, dry_run, the YAML file, `validate -f`):
// the object must leave no route past the rate-limit request caps and hold no limit that does
// not compile, with the field to fix. Per revision: what does not apply is left out and
// reported, as per-route errors are (a route past the caps is not in the IR, so Envoy does
// not serve it: never served unlimited), and a revision is never refused for it, so a stored
// object from an older version does not stop the others from being served. A write is checked
// before it is stored (CheckRevision) and refused when its revision adds such a problem to
// what is served: refusing more than PrepareRevision, never less, so a write that passes
// still applies.
type rateLimitConsumer struct {
	svc *ratelimit.Service // nil: checks only (validate -f)
	log *slog.Logger
	// served holds the problem keys of the revision served (nil before the first).
	served atomic.Pointer[map[string]bool]
}

func newRateLimitConsumer(svc *ratelimit.Service, log *slog.Logger) *rateLimitConsumer {
	return &rateLimitConsumer{svc: svc, log: log}
}

// Name implements pipeline.Consumer.
func (c *rateLimitConsumer) Name() string { return "ratelimit" }

// Prepare is not called: the pipeline calls PrepareRevision (pipeline.RevisionConsumer).
func (c *rateLimitConsumer) Prepare(context.Context, *model.Snapshot) (func(), error) {
	return nil, errors.New("ratelimit: reads the pipeline's translated revision only")
}

// PrepareRevision compiles the revision's rules; what does not compile is left out and logged.
func (c *rateLimitConsumer) PrepareRevision(_ context.Context, rev *pipeline.Revision) (func(), error) {
	rules, problems := ratelimit.CompileRevision(rev.Snap, rev.IR)
	keys := make(map[string]bool, len(problems))
	for _, p := range problems {
		keys[p.Key] = true
		c.log.Warn("rate-limit configuration left out", "revision", rev.IR.Revision, "problem", p.Text)
	}
	return func() {
		if c.svc != nil {
			c.svc.SetRules(rules)
		}
		c.served.Store(&keys)
	}, nil
}

// CheckRevision refuses a revision that adds a problem to the served revision's: a write
// must not make a limit stop applying, nor a route stop being served for its limits.
func (c *rateLimitConsumer) CheckRevision(_ context.Context, rev *pipeline.Revision) error {
	_, problems := ratelimit.CompileRevision(rev.Snap, rev.IR)
	var served map[string]bool
	if p := c.served.Load(); p != nil {
		served = *p
	}
	var errs []error
	for _, p := range problems {
		if !served[p.Key] {
			errs = append(errs, errors.New(p.Text))
		}
	}
	return errors.Join(errs...)
}

// CheckObject implements pipeline.ObjectChecker.
func (c *rateLimitConsumer) CheckObject(obj model.Object, snap *model.Snapshot) model.FieldErrors {
	return ratelimit.CheckObject(obj, snap)
}
