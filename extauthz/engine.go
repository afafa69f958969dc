package extauthz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/waf"
)

// Options configure an Engine. Every field is optional.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Clock is the time source (tests inject one); default time.Now.
	Clock func() time.Time
	// HTTPClient fetches JWKS / discovery documents and calls introspection.
	HTTPClient *http.Client
	// Geo maps addresses to countries (GEOIP_DB); nil: every country is unknown.
	Geo *GeoDB
	// Quota counts API key usage; nil: an in-memory counter.
	Quota QuotaCounter
	// WAF compiles the route/global WAFs; nil: no WAF checker.
	WAF *waf.Registry
	// DefaultIssuer comes from JWT_ISSUER / JWT_AUDIENCE / JWKS_ENDPOINT.
	DefaultIssuer *model.JWTIssuer
	// Introspection comes from OAUTH2_INTROSPECTION_ENDPOINT (settings take precedence).
	Introspection *model.Introspection
	// TokenCacheSize bounds the verified-token cache (default 65536).
	TokenCacheSize int
}

// Engine decides Check requests over the tables of the current snapshot. It is a
// pipeline.Consumer: Prepare builds new tables and the returned commit swaps them in.
type Engine struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	client  *http.Client
	metrics *Metrics
	geo     *GeoDB
	quota   QuotaCounter
	wafs    *waf.Registry
	tokens  *tokenCache
	intro   *introCache

	cur atomic.Pointer[tables]
	// allowed is the pre-resolved decisions counter of a plain allow.
	allowed prometheus.Counter

	srcMu   sync.Mutex
	sources map[string]*keySource

	// buildMu serializes builds; policies are the last build's compiled policies by id
	// (reused while their rules are the same), policyCompiles counts compiles.
	buildMu        sync.Mutex
	policies       map[string]*compiledPolicy
	policyCompiles atomic.Uint64
}

// New returns an engine with no tables: until the first Prepare/commit every Check is
// denied with 503.
func New(o Options) (*Engine, error) {
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	e := &Engine{opts: o, log: o.Logger, now: o.Clock, client: o.HTTPClient, metrics: m, geo: o.Geo,
		quota: o.Quota, wafs: o.WAF, tokens: newTokenCache(o.TokenCacheSize),
		intro: newIntroCache(), sources: map[string]*keySource{}}
	e.allowed = m.Decisions.WithLabelValues(CheckerNone, DecisionAllow, ReasonOK)
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.client == nil {
		e.client = &http.Client{Timeout: fetchTimeout}
	}
	if e.quota == nil {
		e.quota = NewMemoryQuota(e.now)
	}
	return e, nil
}

// Name implements pipeline.Consumer.
func (e *Engine) Name() string { return "extauthz" }

// Prepare implements pipeline.Consumer: it builds the tables of snap (compiling policies and
// WAFs) without touching the live ones.
func (e *Engine) Prepare(_ context.Context, snap *model.Snapshot) (func(), error) {
	res, err := e.build(snap)
	if err != nil {
		return nil, err
	}
	return e.commit(res), nil
}

// PrepareRevision implements pipeline.RevisionConsumer: it compiles the revision's IR (the
// model translated once for every consumer) into new tables without touching the live ones.
func (e *Engine) PrepareRevision(_ context.Context, rev *pipeline.Revision) (func(), error) {
	res, err := e.buildIR(rev.IR, rev.Snap)
	if err != nil {
		return nil, err
	}
	return e.commit(res), nil
}

// CheckObject is ext_authz's object check (pipeline.ObjectChecker): a policy's CEL rules
// must compile, and so must a route's or the settings' WAF rule set. The registry compiles
// (and caches, for the next revision) each distinct rule set once; only on failure is it
// compiled again by waf.ValidateSettings to name the bad field and line.
func (e *Engine) CheckObject(obj model.Object, snap *model.Snapshot) model.FieldErrors {
	switch o := obj.(type) {
	case *model.Policy:
		return ValidatePolicy(o, snap)
	case *model.Route:
		return e.checkWAF(o.WAF)
	case *model.Settings:
		return e.checkWAF(o.WAF)
	}
	return nil
}

func (e *Engine) checkWAF(s *model.WAFSettings) model.FieldErrors {
	if e.wafs == nil || !s.IsEnabled() || len(s.Validate()) > 0 {
		return nil // no WAF here, or the model reports shape errors itself
	}
	if _, err := e.wafs.Get(s); err == nil {
		return nil
	}
	var errs model.FieldErrors
	errs.Nest("waf", waf.ValidateSettings(s))
	return errs
}

// PolicyCompiles counts the policies compiled since the engine was made (a policy whose
// rules did not change is not compiled again).
func (e *Engine) PolicyCompiles() uint64 { return e.policyCompiles.Load() }

func (e *Engine) commit(res *buildResult) func() {
	return func() {
		e.cur.Store(res.t)
		e.srcMu.Lock()
		e.sources = res.sources
		e.srcMu.Unlock()
		if e.wafs != nil {
			e.wafs.Retain(res.wafs...)
		}
	}
}

// Ready reports whether tables are loaded (for GET /ready).
func (e *Engine) Ready() error {
	if e.cur.Load() == nil {
		return errors.New("ext_authz: no configuration loaded yet")
	}
	return nil
}

// Run refreshes JWKS keys in the background until ctx ends.
func (e *Engine) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		e.RefreshKeys(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// RefreshKeys fetches every issuer's keys whose refresh time has come.
func (e *Engine) RefreshKeys(ctx context.Context) {
	e.srcMu.Lock()
	srcs := make([]*keySource, 0, len(e.sources))
	for _, s := range e.sources {
		srcs = append(srcs, s)
	}
	e.srcMu.Unlock()
	for _, s := range srcs {
		if ctx.Err() != nil {
			return
		}
		if err := s.refreshIfDue(ctx); err != nil {
			cached := s.current() != nil
			e.log.Warn("jwks refresh failed", "issuer", s.issuer, "keeping_cached_keys", cached, "error", err.Error())
			e.metrics.DependencyFailures.WithLabelValues("jwks_refresh", "background").Inc()
		}
	}
}
