package waf

import (
	"log/slog"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// Registry holds one compiled WAF per distinct ruleset, shared by every route whose
// settings produce the same final directives. Build the WAFs of a new configuration with
// Get (compiling before the swap), swap, then call Retain with the WAFs still in use so
// the others are dropped.
type Registry struct {
	logger  *slog.Logger
	metrics *Metrics
	tracker *Tracker

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	ready chan struct{} // closed once waf/err are set
	waf   *WAF
	err   error
}

// RegistryOptions configures a Registry. Every field is optional.
type RegistryOptions struct {
	Logger *slog.Logger
	// Metrics counts threats in RouteWAF.Check.
	Metrics *Metrics
	// Tracker denies repeat offenders for routes with block_malicious_ips.
	Tracker *Tracker
}

// NewRegistry returns an empty registry.
func NewRegistry(opts RegistryOptions) *Registry {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Registry{logger: opts.Logger, metrics: opts.Metrics, tracker: opts.Tracker, entries: map[string]*entry{}}
}

// Get returns the compiled WAF for s, compiling it on first use. It returns nil, nil when
// s is nil or disabled. Concurrent calls for the same ruleset compile it once.
func (r *Registry) Get(s *model.WAFSettings) (*WAF, error) {
	if !s.IsEnabled() {
		return nil, nil
	}
	cfg := ConfigFromSettings(s)
	key := cfg.Key()

	r.mu.Lock()
	e, ok := r.entries[key]
	if !ok {
		e = &entry{ready: make(chan struct{})}
		r.entries[key] = e
	}
	r.mu.Unlock()
	if ok {
		<-e.ready
		return e.waf, e.err
	}

	start := time.Now()
	e.waf, e.err = Compile(cfg, r.logger)
	close(e.ready)
	if e.err != nil {
		r.mu.Lock()
		if r.entries[key] == e {
			delete(r.entries, key)
		}
		r.mu.Unlock()
		return nil, e.err
	}
	r.logger.Info("waf compiled", "waf", key, "rules", e.waf.RulesCount(),
		"paranoia_level", cfg.ParanoiaLevel, "mode", string(cfg.Mode), "took", time.Since(start).String())
	return e.waf, nil
}

// Retain drops every compiled WAF that is not in inUse (nil entries are ignored) and
// returns how many were dropped. Call it after swapping in the tables that use inUse.
func (r *Registry) Retain(inUse ...*WAF) int {
	keep := make(map[*WAF]bool, len(inUse))
	for _, w := range inUse {
		if w != nil {
			keep[w] = true
		}
	}
	var drop []*WAF
	r.mu.Lock()
	for k, e := range r.entries {
		select {
		case <-e.ready:
		default:
			continue // still compiling for a configuration being built
		}
		if e.waf != nil && !keep[e.waf] {
			drop = append(drop, e.waf)
			delete(r.entries, k)
		}
	}
	r.mu.Unlock()
	for _, w := range drop {
		if err := w.Close(); err != nil {
			r.logger.Warn("closing waf", "waf", w.key, "error", err)
		}
		r.logger.Info("waf dropped", "waf", w.key)
	}
	return len(drop)
}

// RetainRoutes is Retain for the WAFs of route checkers (nil entries are ignored).
func (r *Registry) RetainRoutes(inUse ...*RouteWAF) int {
	wafs := make([]*WAF, 0, len(inUse))
	for _, rw := range inUse {
		if rw != nil {
			wafs = append(wafs, rw.WAF)
		}
	}
	return r.Retain(wafs...)
}

// Len is the number of compiled WAFs held.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// ForRoute returns the route's WAF checker: the shared compiled WAF plus the route's
// repeat-offender policy, metrics and tracker. It returns nil, nil when the WAF is off.
func (r *Registry) ForRoute(routeID string, s *model.WAFSettings) (*RouteWAF, error) {
	w, err := r.Get(s)
	if err != nil || w == nil {
		return nil, err
	}
	return &RouteWAF{
		RouteID: routeID,
		WAF:     w,
		Policy:  OffenderPolicyFromSettings(s),
		metrics: r.metrics,
		tracker: r.tracker,
		logger:  r.logger,
	}, nil
}
