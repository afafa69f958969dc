package extauthz

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/model"
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
}

func (e *Engine) build(snap *model.Snapshot) (*buildResult, error) {
	now := e.now()
	auth := &model.AuthSettings{}
	var globalWAF *model.WAFSettings
	if snap.Settings != nil {
		if snap.Settings.Auth != nil {
			auth = snap.Settings.Auth
		}
		globalWAF = snap.Settings.WAF
	}
	t := &tables{rev: snap.Revision, routes: make(map[string]*routePolicy, len(snap.Routes)),
		keys: make(map[string]*keyEntry, len(snap.APIKeys)), tenants: map[string]*model.Tenant{},
		issuers: map[string]*issuer{}, keepCreds: auth.KeepCredentials, trustedHops: auth.TrustedProxyHops,
		maxToken: auth.MaxTokenBytes}
	hdr := auth.IdentityHeaderNames() // the names the translator strips from clients' requests
	t.hdrUser, t.hdrTenant, t.hdrKey, t.hdrScopes = hdr["user_id"], hdr["tenant_id"], hdr["api_key_id"], hdr["scopes"]
	if t.maxToken <= 0 {
		t.maxToken = defaultMaxTokenBytes
	}
	res := &buildResult{t: t, sources: map[string]*keySource{}}

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

	// IP rules.
	global := &ipPolicy{}
	perRoute := map[string]*ipPolicy{}
	byID := map[string]*model.IPRule{}
	sets := map[string]*ipSet{}
	for _, r := range snap.IPRules {
		s, err := ruleSet(r, now)
		if err != nil {
			// The entries that parse still apply; an allow rule left with none allows no one.
			e.log.Warn("ip rule entries left out", "ip_rule", r.ID, "error", err.Error())
		}
		if s == nil {
			continue // expired
		}
		byID[r.ID], sets[r.ID] = r, s
		if len(r.Routes) == 0 {
			global.addMerged(r.Action, s)
			continue
		}
		for _, rid := range r.Routes {
			p := perRoute[rid]
			if p == nil {
				p = &ipPolicy{}
				perRoute[rid] = p
			}
			p.add(r.Action, s)
		}
	}

	// Policies, compiled once each.
	compiled := map[string]*compiledPolicy{}
	var globalPolicies []*model.Policy
	routePolicies := map[string][]*model.Policy{}
	for _, p := range snap.Policies {
		if p.Disabled {
			continue
		}
		cp, errs := compilePolicy(p)
		if len(errs) > 0 {
			// Fail closed: a rule that does not compile denies (500) on the routes it covers
			// (compilePolicy keeps it in its place as a denying rule).
			e.log.Error("policy has rules that do not compile; they deny until fixed", "policy", p.ID, "error", errs.Error())
		}
		compiled[p.ID] = cp
		if len(p.Rules) == 0 {
			cp.rules = nil
		}
		if len(p.Routes) == 0 {
			globalPolicies = append(globalPolicies, p)
		}
		for _, rid := range p.Routes {
			routePolicies[rid] = append(routePolicies[rid], p)
		}
	}
	byPolicyID := map[string]*model.Policy{}
	for _, p := range snap.Policies {
		if !p.Disabled {
			byPolicyID[p.ID] = p
		}
	}

	mk := func(r *model.Route) (*routePolicy, error) {
		rp := &routePolicy{requireAuth: true, failOpen: auth.FailOpen, dryRun: auth.DryRun}
		var ra *model.RouteAuth
		var pols []*model.Policy
		wafSettings := routeWAFSettings(globalWAF, r)
		if r != nil {
			rp.id, rp.tenant, rp.requireAuth = r.ID, r.Tenant, r.AuthRequired()
			ra = r.Auth
		}
		// IP: global rules (shared), rules naming the route, rules the route names.
		rp.ip.global = global
		if r != nil {
			if p := perRoute[r.ID]; p != nil {
				rp.ip.deny = append(rp.ip.deny, p.deny...)
				rp.ip.allow = append(rp.ip.allow, p.allow...)
			}
		}
		seen := map[string]bool{}
		if ra != nil {
			rp.failOpen = rp.failOpen || ra.FailOpen
			rp.dryRun = rp.dryRun || ra.DryRun
			for _, m := range ra.Methods {
				switch m {
				case "jwt":
					rp.methods |= allowJWT
				case "api_key":
					rp.methods |= allowAPIKey
				case "introspection":
					rp.methods |= allowIntrospection
				}
			}
			rp.scopes, rp.roles, rp.audiences = ra.Scopes, ra.Roles, ra.Audience
			if len(ra.Issuers) > 0 {
				rp.issuers = map[string]bool{}
				for _, i := range ra.Issuers {
					rp.issuers[i] = true
				}
			}
			rp.tenantHeader = strings.ToLower(ra.TenantHeader)
			for c, h := range ra.ClaimsToHeaders {
				rp.claims = append(rp.claims, claimHeader{claim: c, header: strings.ToLower(h)})
			}
			sort.Slice(rp.claims, func(i, j int) bool { return rp.claims[i].claim < rp.claims[j].claim })
			for _, id := range ra.IPRules {
				r, s := byID[id], sets[id]
				if r == nil {
					continue // unknown or expired: nothing to enforce
				}
				if len(r.Routes) == 0 {
					continue // already global
				}
				rp.ip.add(r.Action, s)
			}
			for _, id := range ra.Policies {
				if p := byPolicyID[id]; p != nil && !seen[id] {
					seen[id] = true
					pols = append(pols, p)
				}
			}
		}
		if r != nil {
			for _, p := range routePolicies[r.ID] {
				if !seen[p.ID] {
					seen[p.ID] = true
					pols = append(pols, p)
				}
			}
		}
		for _, p := range globalPolicies {
			if !seen[p.ID] {
				seen[p.ID] = true
				pols = append(pols, p)
			}
		}
		for _, p := range pols {
			addCountries(&rp.geo.allow, p.AllowCountries)
			addCountries(&rp.geo.deny, p.DenyCountries)
			if cp := compiled[p.ID]; cp != nil && len(cp.rules) > 0 {
				rp.policies = append(rp.policies, cp)
			}
		}
		if wafSettings != nil && wafSettings.GeoblockingEnabled {
			addCountries(&rp.geo.deny, wafSettings.BlockedCountries)
		}
		var md map[string]string
		if r != nil {
			md = r.Metadata
		}
		rp.celRoute = routeVars(rp.id, rp.tenant, md)
		if e.wafs != nil && wafSettings.IsEnabled() {
			rid := wafRouteID(r)
			rw, err := e.wafs.ForRoute(rid, wafSettings)
			if err != nil && ownWAF(r) {
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
	for _, r := range snap.Routes {
		rp, err := mk(r)
		if err != nil {
			return nil, err
		}
		t.routes[r.ID] = rp
	}
	def, err := mk(nil)
	if err != nil {
		return nil, err
	}
	t.def = def
	return res, nil
}

// routeWAFSettings is the WAF of route r (nil: the default policy): its own, else the global one.
func routeWAFSettings(global *model.WAFSettings, r *model.Route) *model.WAFSettings {
	if ownWAF(r) {
		return r.WAF
	}
	return global
}

// ownWAF tells whether route r has WAF settings of its own (not the global ones).
func ownWAF(r *model.Route) bool { return r != nil && r.WAF != nil }

// wafRouteID names route r's WAF ("_default" for the default policy).
func wafRouteID(r *model.Route) string {
	if r == nil || r.ID == "" {
		return "_default"
	}
	return r.ID
}

func wafError(rid string, err error) error { return fmt.Errorf("route %q: waf: %w", rid, err) }

// CheckRevision is the engine's pipeline check (pipeline.Checker; Check is the
// authorization service's): it refuses what Prepare refuses, a global WAF (settings.waf)
// that does not compile (compiled WAFs are cached by the registry; a route's own WAF that
// does not compile only makes that route deny), without what only serving needs: compiling
// every CEL policy, building the key and IP tables, and logging the entries those leave
// out. The API runs it on every write; Prepare's full build cost each write a compile of
// every policy and repeated each left-out entry's warning.
func (e *Engine) CheckRevision(_ context.Context, snap *model.Snapshot) error {
	if e.wafs == nil || snap.Settings == nil || !snap.Settings.WAF.IsEnabled() {
		return nil
	}
	if _, err := e.wafs.Get(snap.Settings.WAF); err != nil {
		// Prepare meets the global WAF first on the first route without a WAF of its own.
		for _, r := range snap.Routes {
			if !ownWAF(r) {
				return wafError(wafRouteID(r), err)
			}
		}
		return wafError(wafRouteID(nil), err)
	}
	return nil
}

func (p *ipPolicy) add(action string, s *ipSet) {
	if action == "allow" {
		p.allow = append(p.allow, s)
	} else {
		p.deny = append(p.deny, s)
	}
}
