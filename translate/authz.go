package translate

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// inputs is one revision's reading of what a route's translation depends on besides the
// route itself: settings, the ip-rules in force, the enabled policies, the rate-limit
// objects. Built once per revision (O(objects)), read per route.
type inputs struct {
	snap      *model.Snapshot
	now       time.Time
	auth      *model.AuthSettings // never nil
	globalWAF *model.WAFSettings
	// inForce are the ip-rules that have not expired at now, by id.
	inForce     map[string]*model.IPRule
	anyGlobalIP bool
	rulesNaming map[string][]*model.IPRule // route id -> in-force rules naming it, snapshot order
	// enabled are the policies not disabled, by id.
	enabled        map[string]*model.Policy
	globalPolicies []*model.Policy
	policiesNaming map[string][]*model.Policy
	rateLimits     map[string]*model.RateLimit
	// globalKey is the part of every route's memo key the shared inputs make; globalOK is
	// false when one of them has no revision (an in-memory snapshot: nothing is memoized).
	globalKey string
	globalOK  bool
}

func newInputs(snap *model.Snapshot, now time.Time) *inputs {
	in := &inputs{snap: snap, now: now, auth: &model.AuthSettings{}, inForce: map[string]*model.IPRule{},
		rulesNaming: map[string][]*model.IPRule{}, enabled: map[string]*model.Policy{},
		policiesNaming: map[string][]*model.Policy{}, rateLimits: make(map[string]*model.RateLimit, len(snap.RateLimits))}
	var k keyWriter
	if s := snap.Settings; s != nil {
		if s.Auth != nil {
			in.auth = s.Auth
		}
		in.globalWAF = s.WAF
		if s.Auth == nil && s.WAF == nil && s.RateLimit == nil {
			// Nothing in them is an input: the defaults model.Decode makes for a store that
			// holds no settings object carry no revision, and must not stop every route's
			// memo (a ban would translate every route again).
			k.str("settings:none")
		} else {
			k.obj("settings", &s.Meta)
		}
	} else {
		k.str("settings:none")
	}
	for _, r := range snap.IPRules {
		// An IP rule that expired before this translation (a WAF ban of yesterday) is
		// skipped by ext_authz too: it must not keep ext_authz on for a public route. A zero
		// now counts every rule (the conservative answer); a rule expiring later keeps
		// ext_authz on until the next revision, which ext_authz then skips.
		if r.ExpiresAt != nil && !now.IsZero() && !r.ExpiresAt.After(now) {
			continue
		}
		in.inForce[r.ID] = r
		if len(r.Routes) == 0 {
			in.anyGlobalIP = true
		}
		for _, rid := range r.Routes {
			in.rulesNaming[rid] = append(in.rulesNaming[rid], r)
		}
	}
	// A global rule's addresses are no route's input (ext_authz holds the global sets once);
	// only whether there is one turns ext_authz on: a ban is no route translation.
	k.str("globalip:" + strconv.FormatBool(in.anyGlobalIP))
	for _, p := range snap.Policies {
		if p.Disabled {
			continue
		}
		in.enabled[p.ID] = p
		if len(p.Routes) == 0 {
			in.globalPolicies = append(in.globalPolicies, p)
			k.obj("policy:"+p.ID, &p.Meta)
		}
		for _, rid := range p.Routes {
			in.policiesNaming[rid] = append(in.policiesNaming[rid], p)
		}
	}
	for _, rl := range snap.RateLimits {
		in.rateLimits[rl.ID] = rl
	}
	if g := snap.Settings; g != nil && g.RateLimit != nil {
		for _, id := range g.RateLimit.Policies {
			in.rateLimitKey(&k, id)
		}
	}
	in.globalKey, in.globalOK = k.b.String(), !k.bad
	return in
}

func (in *inputs) rateLimitKey(k *keyWriter, id string) {
	if rl := in.rateLimits[id]; rl != nil {
		k.obj("ratelimit:"+id, &rl.Meta)
	} else {
		k.str("ratelimit:" + id + "@none")
	}
}

// routeKey is the memo key of route r's translation: the route's revision and every input
// of its translation, by revision or by value. ok is false when one of them has no revision.
func (in *inputs) routeKey(r *model.Route) (string, bool) {
	if !in.globalOK {
		return "", false
	}
	var k keyWriter
	k.str(in.globalKey)
	k.obj("route:"+r.ID, &r.Meta)
	for _, ip := range in.rulesNaming[r.ID] {
		k.obj("ipnaming:"+ip.ID, &ip.Meta)
	}
	for _, p := range in.policiesNaming[r.ID] {
		k.obj("polnaming:"+p.ID, &p.Meta)
	}
	if a := r.Auth; a != nil {
		for _, id := range a.IPRules {
			if ip := in.inForce[id]; ip != nil {
				k.obj("ip:"+id, &ip.Meta)
			} else {
				k.str("ip:" + id + "@none")
			}
		}
		for _, id := range a.Policies {
			if p := in.enabled[id]; p != nil {
				k.obj("pol:"+id, &p.Meta)
			} else {
				k.str("pol:" + id + "@none")
			}
		}
	}
	if rr := r.RateLimit; rr != nil {
		for _, id := range rr.Policies {
			in.rateLimitKey(&k, id)
		}
	}
	return k.b.String(), !k.bad
}

type keyWriter struct {
	b   strings.Builder
	bad bool
}

func (k *keyWriter) str(s string) {
	k.b.WriteString(strconv.Itoa(len(s)))
	k.b.WriteByte(':')
	k.b.WriteString(s)
}

// obj names a stored object's content: its store revision and its write time. The revision
// alone names it only within one history of the store: a Redis that lost acknowledged writes
// counts again from a lower revision, and a replica started after the loss writes the same
// id at a revision this Translator has seen, with other content (and another write time).
func (k *keyWriter) obj(name string, m *model.Meta) {
	if m.Revision == 0 {
		k.bad = true
	}
	k.str(name + "@" + strconv.FormatUint(m.Revision, 10) + "@" + strconv.FormatInt(m.UpdatedAt.UnixNano(), 10))
}

// effectiveWAF returns the WAF settings in force for a route (nil: the default policy): its
// own, else the global ones. The one reading for ext_authz and Envoy's body buffering.
func (in *inputs) effectiveWAF(r *model.Route) *model.WAFSettings {
	if r != nil && r.WAF != nil {
		return r.WAF
	}
	return in.globalWAF
}

// needsAuthz: a credential is required, or a WAF, geoblocking, an IP rule in force, a
// policy or a tenant rule applies to the route.
func (in *inputs) needsAuthz(r *model.Route) bool {
	if r.AuthRequired() || r.Tenant != "" {
		return true
	}
	if w := in.effectiveWAF(r); w.IsEnabled() || (w != nil && w.GeoblockingEnabled) {
		return true
	}
	if a := r.Auth; a != nil && (len(a.IPRules) > 0 || len(a.Policies) > 0 || a.TenantHeader != "") {
		return true
	}
	return in.anyGlobalIP || len(in.rulesNaming[r.ID]) > 0 || len(in.globalPolicies) > 0 || len(in.policiesNaming[r.ID]) > 0
}

// ownChecks names the model fields by which route r itself asks for a check only Envoy
// applies (ir.Route.OwnChecks): the route-specific part of needsAuthz, and the route's own
// rate limits. What is edge-wide (a global IP rule such as a WAF ban, a global policy, the
// settings' WAF and rate limits) is not named: proxyless clients are served routes that
// only edge-wide protections cover. It reads the route and the objects naming it, which
// the route's memo key names (routeKey).
func (in *inputs) ownChecks(r *model.Route) []string {
	var out []string
	if r.AuthRequired() {
		out = append(out, "require_auth")
	}
	if r.Tenant != "" {
		out = append(out, "tenant")
	}
	if a := r.Auth; a != nil {
		if len(a.IPRules) > 0 {
			out = append(out, "auth.ip_rules")
		}
		if len(a.Policies) > 0 {
			out = append(out, "auth.policies")
		}
		if a.TenantHeader != "" {
			out = append(out, "auth.tenant_header")
		}
	}
	for _, ip := range in.rulesNaming[r.ID] {
		out = append(out, "ip-rules/"+ip.ID)
	}
	for _, p := range in.policiesNaming[r.ID] {
		out = append(out, "policies/"+p.ID)
	}
	if w := r.WAF; w != nil {
		if w.IsEnabled() {
			out = append(out, "waf")
		}
		if w.GeoblockingEnabled {
			out = append(out, "waf.geoblocking_enabled")
		}
	}
	if rr := r.RateLimit; rr != nil {
		if len(rr.Policies) > 0 {
			out = append(out, "rate_limit.policies")
		}
		if len(rr.Limits) > 0 {
			out = append(out, "rate_limit.limits")
		}
	}
	if len(out) == 0 {
		return nil
	}
	return mergeSorted(nil, out)
}

// identityHeaders is the one reading of settings.auth.identity_headers.
func (in *inputs) identityHeaders() ir.IdentityHeaders {
	h := in.auth.IdentityHeaderNames()
	return ir.IdentityHeaders{UserID: h["user_id"], TenantID: h["tenant_id"], APIKeyID: h["api_key_id"], Scopes: h["scopes"]}
}

// routeAuthz resolves route r's ext_authz settings (nil r: the default for a Check that
// names no route).
func (in *inputs) routeAuthz(r *model.Route) *ir.RouteAuthz {
	ra := &ir.RouteAuthz{RequireAuth: true, FailOpen: in.auth.FailOpen, DryRun: in.auth.DryRun}
	var a *model.RouteAuth
	if r != nil {
		ra.RouteID, ra.Tenant, ra.RequireAuth, ra.Metadata = r.ID, r.Tenant, r.AuthRequired(), r.Metadata
		a = r.Auth
	}
	var pols []*model.Policy
	seen := map[string]bool{}
	addPol := func(p *model.Policy) {
		if p != nil && !seen[p.ID] {
			seen[p.ID] = true
			pols = append(pols, p)
		}
	}
	rules := map[string]bool{}
	if r != nil {
		for _, ip := range in.rulesNaming[r.ID] {
			rules[ip.ID] = true
		}
	}
	if a != nil {
		ra.FailOpen = ra.FailOpen || a.FailOpen
		ra.DryRun = ra.DryRun || a.DryRun
		methods := map[string]bool{}
		for _, m := range a.Methods {
			switch m {
			case ir.MethodJWT, ir.MethodAPIKey, ir.MethodIntrospection:
				methods[m] = true
			}
		}
		for m := range methods {
			ra.Methods = append(ra.Methods, m)
		}
		sort.Strings(ra.Methods)
		ra.Scopes, ra.Roles, ra.Audiences = a.Scopes, a.Roles, a.Audience
		ra.Issuers = mergeSorted(nil, a.Issuers)
		ra.TenantHeader = strings.ToLower(a.TenantHeader)
		for c, h := range a.ClaimsToHeaders {
			ra.ClaimsToHeaders = append(ra.ClaimsToHeaders, ir.ClaimHeader{Claim: c, Header: strings.ToLower(h)})
		}
		sort.Slice(ra.ClaimsToHeaders, func(i, j int) bool { return ra.ClaimsToHeaders[i].Claim < ra.ClaimsToHeaders[j].Claim })
		for _, id := range a.IPRules {
			// Unknown or expired: nothing to enforce. A global rule applies already.
			if ip := in.inForce[id]; ip != nil && len(ip.Routes) > 0 {
				rules[id] = true
			}
		}
		for _, id := range a.Policies {
			addPol(in.enabled[id])
		}
	}
	for id := range rules {
		ra.IPRules = append(ra.IPRules, id)
	}
	sort.Strings(ra.IPRules)
	if r != nil {
		for _, p := range in.policiesNaming[r.ID] {
			addPol(p)
		}
	}
	for _, p := range in.globalPolicies {
		addPol(p)
	}
	var allow, deny []string
	for _, p := range pols {
		ra.Policies = append(ra.Policies, p.ID)
		allow = append(allow, p.AllowCountries...)
		deny = append(deny, p.DenyCountries...)
	}
	w := in.effectiveWAF(r)
	if w != nil && w.GeoblockingEnabled {
		deny = append(deny, w.BlockedCountries...)
	}
	ra.GeoAllow, ra.GeoDeny = countries(allow), countries(deny)
	if w.IsEnabled() {
		ra.WAF = wafIR(w)
		ra.OwnWAF = r != nil && r.WAF != nil
	}
	return ra
}

func countries(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	up := make([]string, len(list))
	for i, c := range list {
		up[i] = strings.ToUpper(strings.TrimSpace(c))
	}
	return mergeSorted(nil, up)
}

func wafIR(w *model.WAFSettings) *ir.WAF {
	return &ir.WAF{Mode: w.Mode, ParanoiaLevel: w.ParanoiaLevel, AnomalyThreshold: w.AnomalyThreshold,
		MaxRequestBodySize: w.MaxRequestBodySize, CheckTimeout: w.CheckTimeout.D(), MaxHeaderSize: w.MaxHeaderSize,
		ExcludeRules: append([]int(nil), w.ExcludeRules...), CustomRules: w.CustomRules, CustomRulesAfterCRS: w.CustomRulesAfterCRS,
		BlockMaliciousIPs: w.BlockMaliciousIPs, MaliciousIPThreshold: w.MaliciousIPThreshold,
		MaliciousIPWindow: w.MaliciousIPWindow.D(), MaliciousIPBanDuration: w.MaliciousIPBanDuration.D()}
}

// authzConfig is the revision's shared ext_authz part: settings, the ip-rules in force and
// the enabled policies (routes are added by the caller).
func (in *inputs) authzConfig() *ir.AuthzConfig {
	a := &ir.AuthzConfig{Identity: in.identityHeaders(), KeepCredentials: in.auth.KeepCredentials,
		TrustedProxyHops: in.auth.TrustedProxyHops, MaxTokenBytes: in.auth.MaxTokenBytes, Default: in.routeAuthz(nil)}
	for _, r := range in.snap.IPRules {
		if in.inForce[r.ID] != r {
			continue
		}
		rule := &ir.IPRule{ID: r.ID, Deny: r.Action != "allow", CIDRs: r.CIDRs, Global: len(r.Routes) == 0}
		if r.ExpiresAt != nil {
			rule.Expiry = *r.ExpiresAt
		}
		a.IPRules = append(a.IPRules, rule)
	}
	sort.Slice(a.IPRules, func(i, j int) bool { return a.IPRules[i].ID < a.IPRules[j].ID })
	for _, p := range in.snap.Policies {
		if in.enabled[p.ID] != p {
			continue
		}
		ip := &ir.Policy{ID: p.ID, AllowCountries: p.AllowCountries, DenyCountries: p.DenyCountries}
		for _, r := range p.Rules {
			ip.Rules = append(ip.Rules, ir.PolicyRule{Name: r.Name, Expression: r.Expression, Deny: r.Action != "allow", Status: r.Status, Message: r.Message})
		}
		a.Policies = append(a.Policies, ip)
	}
	sort.Slice(a.Policies, func(i, j int) bool { return a.Policies[i].ID < a.Policies[j].ID })
	return a
}
