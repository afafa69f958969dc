package extauthz

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/waf"
)

// Credential methods a route accepts (bit mask; 0 = any configured).
const (
	allowJWT uint8 = 1 << iota
	allowAPIKey
	allowIntrospection
)

// routePolicy is everything the checkers need for one route, precomputed per snapshot.
type routePolicy struct {
	id           string
	tenant       string
	requireAuth  bool
	methods      uint8
	scopes       []string
	roles        []string
	issuers      map[string]bool // nil: any configured issuer
	audiences    []string
	tenantHeader string
	failOpen     bool
	dryRun       bool
	claims       []claimHeader
	ip           ipPolicy
	geo          geoPolicy
	policies     []*compiledPolicy
	celRoute     map[string]any
	waf          *waf.RouteWAF
	// wafInvalid: the route's own WAF rules do not compile; it denies (500) until fixed.
	wafInvalid bool
}

type claimHeader struct{ claim, header string }

func (rp *routePolicy) accepts(m uint8) bool { return rp.methods == 0 || rp.methods&m != 0 }

// tables is one snapshot's immutable lookup state.
type tables struct {
	rev           uint64
	routes        map[string]*routePolicy
	def           *routePolicy // no route_id sent
	keys          map[string]*keyEntry
	tenants       map[string]*model.Tenant
	issuers       map[string]*issuer
	introspection *introspector
	hdrUser       string
	hdrTenant     string
	hdrKey        string
	hdrScopes     string
	keepCreds     bool
	trustedHops   int
	// maxToken refuses longer bearer tokens and API keys before any work.
	maxToken int
}

// defaultMaxTokenBytes: real JWTs and opaque tokens stay well under it; Envoy allows 60 KiB
// of headers, and every byte over this is work (parsing, hashing, an outbound call) an
// unauthenticated caller could make us do.
const defaultMaxTokenBytes = 8 << 10

// buildResult is a prepared snapshot: the tables, and what must be kept alive with them.
type buildResult struct {
	t       *tables
	sources map[string]*keySource
	wafs    []*waf.WAF
	// policies are the compiled policies by id, the memo of the next build.
	policies map[string]*compiledPolicy
}

// build translates snap (the one reading of the model, translate) and compiles it: the
// engine's own Prepare, for a caller without a pipeline.
func (e *Engine) build(snap *model.Snapshot) (*buildResult, error) {
	cfg, err := translate.NewTranslator(translate.Options{Now: e.now}).Translate(snap)
	if err != nil {
		return nil, err
	}
	return e.buildIR(cfg, snap)
}

// buildIR compiles a revision's IR into tables: IP sets, CEL programs, WAF handles, key
// tables. It decides nothing about a route that the IR states (translate does): the
// snapshot is read for the raw objects only (API keys, tenants, JWT issuers, introspection).
// A policy whose rules did not change since the last build is not compiled again.
func (e *Engine) buildIR(cfg *ir.Config, snap *model.Snapshot) (*buildResult, error) {
	e.buildMu.Lock()
	defer e.buildMu.Unlock()
	az := cfg.Authz
	if az == nil {
		return nil, fmt.Errorf("revision %d: the configuration has no ext_authz part", cfg.Revision)
	}
	auth := &model.AuthSettings{}
	if snap.Settings != nil && snap.Settings.Auth != nil {
		auth = snap.Settings.Auth
	}
	t := &tables{rev: snap.Revision, routes: make(map[string]*routePolicy, len(az.Routes)),
		keys: make(map[string]*keyEntry, len(snap.APIKeys)), tenants: map[string]*model.Tenant{},
		issuers: map[string]*issuer{}, keepCreds: az.KeepCredentials, trustedHops: az.TrustedProxyHops,
		maxToken: az.MaxTokenBytes}
	t.hdrUser, t.hdrTenant, t.hdrKey, t.hdrScopes = az.Identity.UserID, az.Identity.TenantID, az.Identity.APIKeyID, az.Identity.Scopes
	if t.maxToken <= 0 {
		t.maxToken = defaultMaxTokenBytes
	}
	res := &buildResult{t: t, sources: map[string]*keySource{}, policies: make(map[string]*compiledPolicy, len(az.Policies))}

	// Issuers: settings first, then the environment's default issuer unless already listed.
	iss := append([]model.JWTIssuer(nil), auth.JWTIssuers...)
	if d := e.opts.DefaultIssuer; d != nil && d.Issuer != "" {
		iss = append(iss, *d)
	}
	e.srcMu.Lock()
	for _, c := range iss {
		if _, dup := t.issuers[c.Issuer]; dup || c.Issuer == "" {
			continue
		}
		key := c.Issuer + "\x00" + c.JWKSURI + "\x00" + c.RefreshInterval.String()
		src := res.sources[key]
		if src == nil {
			src = e.sources[key]
		}
		if src == nil {
			src = newKeySource(c.Issuer, c.JWKSURI, c.RefreshInterval.D(), e.client, e.now)
		}
		res.sources[key] = src
		t.issuers[c.Issuer] = newIssuer(c, src, e.now)
	}
	e.srcMu.Unlock()

	if in := auth.Introspection; in != nil && in.URL != "" {
		t.introspection = newIntrospector(in, e.client)
	} else if in := e.opts.Introspection; in != nil && in.URL != "" {
		t.introspection = newIntrospector(in, e.client)
	}

	locs := map[string]*time.Location{}
	for _, k := range snap.APIKeys {
		t.keys[k.ID] = buildKey(k, locs)
	}
	for _, tn := range snap.Tenants {
		t.tenants[tn.ID] = tn
	}

	// IP rules: the global ones merged into one shared policy, the others one set each.
	global := &ipPolicy{}
	rules := make(map[string]*ir.IPRule, len(az.IPRules))
	sets := map[string]*ipSet{}
	for _, r := range az.IPRules {
		s, err := ruleSet(r)
		if err != nil {
			// The entries that parse still apply; an allow rule left with none allows no one.
			e.log.Warn("ip rule entries left out", "ip_rule", r.ID, "error", err.Error())
		}
		if r.Global {
			global.addMerged(r.Deny, s)
			continue
		}
		rules[r.ID], sets[r.ID] = r, s
	}

	// Policies, compiled once each, and only when their rules changed.
	for _, p := range az.Policies {
		res.policies[p.ID] = e.compiled(p)
	}

	mk := func(ra *ir.RouteAuthz) (*routePolicy, error) {
		rp := &routePolicy{id: ra.RouteID, tenant: ra.Tenant, requireAuth: ra.RequireAuth, failOpen: ra.FailOpen,
			dryRun: ra.DryRun, scopes: ra.Scopes, roles: ra.Roles, audiences: ra.Audiences, tenantHeader: ra.TenantHeader}
		for _, m := range ra.Methods {
			switch m {
			case ir.MethodJWT:
				rp.methods |= allowJWT
			case ir.MethodAPIKey:
				rp.methods |= allowAPIKey
			case ir.MethodIntrospection:
				rp.methods |= allowIntrospection
			}
		}
		if len(ra.Issuers) > 0 {
			rp.issuers = make(map[string]bool, len(ra.Issuers))
			for _, i := range ra.Issuers {
				rp.issuers[i] = true
			}
		}
		for _, c := range ra.ClaimsToHeaders {
			rp.claims = append(rp.claims, claimHeader{claim: c.Claim, header: c.Header})
		}
		rp.ip.global = global
		for _, id := range ra.IPRules {
			if r := rules[id]; r != nil {
				rp.ip.add(r.Deny, sets[id])
			}
		}
		addCountries(&rp.geo.allow, ra.GeoAllow)
		addCountries(&rp.geo.deny, ra.GeoDeny)
		for _, id := range ra.Policies {
			if cp := res.policies[id]; cp != nil && len(cp.rules) > 0 {
				rp.policies = append(rp.policies, cp)
			}
		}
		rp.celRoute = routeVars(rp.id, rp.tenant, ra.Metadata)
		if e.wafs != nil && ra.WAF != nil {
			rid := ra.RouteID
			if rid == "" {
				rid = "_default"
			}
			rw, err := e.wafs.ForRoute(rid, wafSettings(ra.WAF))
			if err != nil && ra.OwnWAF {
				// Fail closed, for this route only: a route whose own rules do not compile
				// (stored around the API's check, or by another version) denies every
				// request instead of refusing the revision every other object is in.
				e.log.Error("route WAF rules do not compile; the route denies until fixed", "route", rid, "error", err.Error())
				rp.wafInvalid = true
				return rp, nil
			}
			if err != nil {
				return nil, wafError(rid, err)
			}
			rp.waf = rw
			if rw != nil {
				res.wafs = append(res.wafs, rw.WAF)
			}
		}
		return rp, nil
	}
	for _, ra := range az.Routes {
		rp, err := mk(ra)
		if err != nil {
			return nil, err
		}
		t.routes[ra.RouteID] = rp
	}
	def := az.Default
	if def == nil {
		def = &ir.RouteAuthz{RequireAuth: true}
	}
	rp, err := mk(def)
	if err != nil {
		return nil, err
	}
	t.def = rp
	e.policies = res.policies
	return res, nil
}

// compiled returns policy p compiled: the previous build's when its rules are the same.
// Called with buildMu held.
func (e *Engine) compiled(p *ir.Policy) *compiledPolicy {
	if cp := e.policies[p.ID]; cp != nil && slices.Equal(cp.src, p.Rules) {
		return cp
	}
	e.policyCompiles.Add(1)
	cp, errs := compilePolicy(p)
	if len(errs) > 0 {
		// Fail closed: a rule that does not compile denies (500) on the routes it covers
		// (compilePolicy keeps it in its place as a denying rule).
		e.log.Error("policy has rules that do not compile; they deny until fixed", "policy", p.ID, "error", errs.Error())
	}
	return cp
}

// wafSettings is the model's form of an effective WAF, as the waf package reads it.
func wafSettings(w *ir.WAF) *model.WAFSettings {
	on := true
	return &model.WAFSettings{Enabled: &on, Mode: w.Mode, ParanoiaLevel: w.ParanoiaLevel, AnomalyThreshold: w.AnomalyThreshold,
		MaxRequestBodySize: w.MaxRequestBodySize, CheckTimeout: model.Duration(w.CheckTimeout), MaxHeaderSize: w.MaxHeaderSize,
		ExcludeRules: w.ExcludeRules, CustomRules: w.CustomRules, CustomRulesAfterCRS: w.CustomRulesAfterCRS,
		BlockMaliciousIPs: w.BlockMaliciousIPs, MaliciousIPThreshold: w.MaliciousIPThreshold,
		MaliciousIPWindow: model.Duration(w.MaliciousIPWindow), MaliciousIPBanDuration: model.Duration(w.MaliciousIPBanDuration)}
}

func wafError(rid string, err error) error { return fmt.Errorf("route %q: waf: %w", rid, err) }

// CheckRevision is the engine's pipeline check (pipeline.RevisionChecker; Check is the
// authorization service's): it refuses what PrepareRevision refuses, a global WAF
// (settings.waf) that does not compile (compiled WAFs are cached by the registry; a route's
// own WAF that does not compile only makes that route deny), without what only serving
// needs: compiling every CEL policy, building the key and IP tables, and logging the entries
// those leave out. The API runs it on every write.
func (e *Engine) CheckRevision(_ context.Context, rev *pipeline.Revision) error {
	return e.checkIR(rev.IR)
}

// CheckSnapshot is CheckRevision for a caller without a pipeline: it translates snap first.
func (e *Engine) CheckSnapshot(_ context.Context, snap *model.Snapshot) error {
	if e.wafs == nil || snap.Settings == nil || !snap.Settings.WAF.IsEnabled() {
		return nil // no global WAF: nothing to refuse, nothing to translate
	}
	cfg, err := translate.NewTranslator(translate.Options{Now: e.now}).Translate(snap)
	if err != nil {
		return err
	}
	return e.checkIR(cfg)
}

func (e *Engine) checkIR(cfg *ir.Config) error {
	az := cfg.Authz
	if e.wafs == nil || az == nil || az.Default == nil || az.Default.WAF == nil {
		return nil
	}
	if _, err := e.wafs.Get(wafSettings(az.Default.WAF)); err != nil {
		// Prepare meets the global WAF first on the first route without a WAF of its own.
		for _, ra := range az.Routes {
			if ra.WAF != nil && !ra.OwnWAF {
				return wafError(ra.RouteID, err)
			}
		}
		return wafError("_default", err)
	}
	return nil
}

func (p *ipPolicy) add(deny bool, s *ipSet) {
	if deny {
		p.deny = append(p.deny, s)
	} else {
		p.allow = append(p.allow, s)
	}
}
