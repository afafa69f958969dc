package main

import (
	"context"

	"github.com/api-gateway/api-gateway/internal/pipeline"
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
	log := a.log.With("component", "ratelimit")
	a.pipe.Add(rateLimitConsumer{pipeline.RevisionFunc{N: "ratelimit", F: func(_ context.Context, rev *pipeline.Revision) (func(), error) {
		rules, err := ratelimit.BuildRulesFromIR(rev.IR)
		if err != nil {
			// Objects that do not build are left out and reported; the rest apply.
			log.Warn("rate-limit objects left out", "revision", rev.IR.Revision, "error", err.Error())
		}
		return func() { svc.SetRules(rules) }, nil
	}}})
	return nil
}

// rateLimitConsumer compiles the revision's rate-limit domains. Its check refuses nothing
// (objects that do not build are left out and reported): no build, no warning per write.
type rateLimitConsumer struct{ pipeline.RevisionFunc }

func (rateLimitConsumer) CheckRevision(context.Context, *pipeline.Revision) error { return nil }
