package extauthz

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// Check decides one request: route lookup, then the checkers in order (ip, geo, credentials,
// tenant, policy, waf, quota). It never returns nil.
func (e *Engine) Check(ctx context.Context, r *Request) *Decision {
	start := time.Now()
	d := &Decision{RouteID: r.RouteID}
	t := e.cur.Load()
	var rp *routePolicy
	switch {
	case t == nil:
		d.deny(CheckerRoute, 503, ReasonAuthUnavailable, "authorization is not configured yet")
	case r.RouteID == "" && !r.HasRouteID:
		rp = t.def
	default:
		if rp = t.routes[r.RouteID]; rp == nil {
			d.deny(CheckerRoute, 403, ReasonUnknownRoute, "the route is not known")
		}
	}
	if rp != nil {
		e.decide(ctx, t, rp, r, d)
		if !d.Allowed && d.Outcome == "" && rp.dryRun {
			d.Outcome, d.Allowed = DecisionDryRun, true
		}
		if d.Allowed && !e.identityHeaders(t, rp, d) {
			// A claim (or key field) that would be forwarded carries bytes no header value
			// may hold (CR, LF, NUL, ...): forwarding it would let the token's contents
			// inject headers upstream, and dropping it would forward a partial identity.
			d.SetHeaders, d.RemoveHeaders = nil, nil
			d.deny(CheckerAuth, 401, ReasonInvalidIdentity, "the credentials carry values that cannot be forwarded")
			d.Challenge = challenge(CheckerAuth, ReasonInvalidIdentity)
		}
		if d.Allowed && d.Outcome == "" && d.memo != nil {
			d.memoRoute = rp
		} else {
			d.memo = nil
		}
	}
	if d.Outcome == "" {
		if d.Allowed {
			d.Outcome = DecisionAllow
		} else {
			d.Outcome = DecisionDeny
		}
	}
	if d.Allowed && d.Checker == "" {
		d.Checker, d.Reason = CheckerNone, ReasonOK
	}
	e.metrics.Duration.Observe(time.Since(start).Seconds())
	if d.Outcome == DecisionAllow && d.Checker == CheckerNone {
		e.allowed.Inc()
	} else {
		e.metrics.Decisions.WithLabelValues(d.Checker, d.Outcome, d.Reason).Inc()
	}
	e.logDecision(ctx, r, d)
	return d
}

func (e *Engine) decide(ctx context.Context, t *tables, rp *routePolicy, r *Request, d *Decision) {
	now := e.now()
	d.ClientIP = clientAddr(r.Source, r.Headers["x-forwarded-for"], t.trustedHops)
	// Credentials the gateway reads are removed upstream on every allow: fail-open, and
	// dry-run after an earlier stage (ip, geo) denied before they were verified, included.
	keyCred, bearer := readCredentials(r.Headers)
	d.credentials = keyCred != "" || bearer != ""

	// 1. IP rules.
	if reason, ok := rp.ip.check(d.ClientIP, now); !ok {
		d.deny(CheckerIP, 403, reason, "access from this address is not allowed")
		return
	}
	// 2. Geo rules (the country is also offered to policies).
	if e.geo != nil && (rp.geo.active() || len(rp.policies) > 0) {
		d.Country = e.geo.Country(d.ClientIP)
	}
	if rp.geo.active() {
		if reason, ok := rp.geo.check(d.Country); !ok {
			d.deny(CheckerGeo, 403, reason, "access from this country is not allowed")
			return
		}
	}
	// Between stages: a check whose deadline has passed stops (see abandon).
	if e.abandon(ctx, d, "credentials") {
		return
	}
	// 3. Credentials.
	key, checker, f := e.authenticate(ctx, t, rp, d, keyCred, bearer, now)
	anonymous := false
	if f != nil {
		if f.dependency != nil {
			// A dependency that failed because our own deadline passed is not the
			// dependency's failure, and no fail-open answer is owed to anyone.
			if e.abandon(ctx, d, "credentials") || !e.dependencyFailed(rp, r, d, checker, f) {
				return
			}
			anonymous = true // fail open: continue without an identity
		} else {
			d.deny(checker, f.status, f.reason, f.msg)
			if f.status == 401 || f.reason == ReasonInsufficientScope {
				d.Challenge = challenge(checker, f.reason)
			}
			return
		}
	}
	// 4. Tenant isolation. A fail-open request has no identity, but the route's own tenant
	// rules (disabled tenant, required tenant header) still apply to it.
	if status, reason, msg := e.checkTenant(t, rp, r, &d.Identity); status != 0 {
		d.deny(CheckerTenant, status, reason, msg)
		return
	}
	// 5. Security policies.
	if len(rp.policies) > 0 {
		if e.abandon(ctx, d, "policy") {
			return
		}
		act := &celActivation{r: r, d: d, route: rp.celRoute}
		rule, pid, err := evalPolicies(rp.policies, act)
		if err != nil {
			e.log.LogAttrs(ctx, slog.LevelWarn, "policy rule failed to evaluate; it denies",
				slog.String("request_id", r.ID), slog.String("policy", pid), slog.String("error", err.Error()))
		}
		if rule != nil && rule.deny {
			msg := rule.message
			if msg == "" {
				msg = "the request is denied by a security policy"
			}
			d.deny(CheckerPolicy, rule.status, ReasonPolicyDenied, msg)
			return
		}
	}
	// 6. WAF.
	if rp.wafInvalid {
		d.deny(CheckerWAF, 500, ReasonWAFInvalid, "the route's web application firewall rules are invalid")
		return
	}
	if rp.waf != nil && r.Raw != nil {
		if e.abandon(ctx, d, "waf") {
			return
		}
		ip := ""
		if d.ClientIP.IsValid() {
			ip = d.ClientIP.String()
		}
		v := rp.waf.Check(ctx, r.Raw, ip)
		// The WAF stops where the deadline passed (its answer is then a 503 of its own):
		// that is an abandoned check, not an attack, for the metrics and the logs.
		if e.abandon(ctx, d, "waf") {
			return
		}
		if !v.Allowed {
			status := v.Status
			if status == 0 {
				status = 403
			}
			d.deny(CheckerWAF, status, ReasonWAFBlocked, "the request was blocked by the web application firewall")
			return
		}
	}
	// 7. API key quotas, counted only for requests that passed everything else.
	if key != nil && (key.perDay > 0 || key.perMonth > 0) && !anonymous {
		if e.abandon(ctx, d, "quota") {
			return
		}
		if exceeded, err := e.countQuota(ctx, key, now); err != nil {
			f := &authFailure{status: 503, reason: ReasonAuthUnavailable, msg: "the quota store is unavailable", dependency: err}
			if e.abandon(ctx, d, "quota") || !e.dependencyFailed(rp, r, d, CheckerQuota, f) {
				return
			}
		} else if exceeded {
			d.deny(CheckerQuota, 429, ReasonQuotaExceeded, "the API key's usage quota is exhausted")
			return
		}
	}
	d.Allowed = true
}

// abandon ends a check whose context is done (Envoy's ext_authz timeout passed, or the
// caller went away) before the named stage: nobody will read the answer, so the remaining
// work (outbound calls, policies, WAF, quota units) is skipped. The answer is a 503 deny,
// never turned into an allow by dry_run or fail_open. It reports whether the check ended.
func (e *Engine) abandon(ctx context.Context, d *Decision, stage string) bool {
	if ctx.Err() == nil {
		return false
	}
	e.metrics.Abandoned.WithLabelValues(stage).Inc()
	d.Identity = Identity{Method: MethodNone}
	d.deny(CheckerDeadline, 503, ReasonDeadlineExceeded, "the check's deadline passed")
	d.Outcome = DecisionDeny // set now, so that dry_run does not turn it into an allow
	return true
}

// dependencyFailed handles a failed dependency: fail closed (deny 503) by default, or fail
// open per route. It reports whether the request may continue.
func (e *Engine) dependencyFailed(rp *routePolicy, r *Request, d *Decision, checker string, f *authFailure) bool {
	mode := "fail_closed"
	if rp.failOpen {
		mode = "fail_open"
	}
	e.metrics.DependencyFailures.WithLabelValues(checker, mode).Inc()
	e.log.Warn("ext_authz dependency failed", "request_id", r.ID, "route_id", rp.id, "checker", checker,
		"mode", mode, "error", f.dependency.Error())
	if rp.failOpen {
		d.Identity = Identity{Method: MethodNone}
		d.Outcome, d.Checker, d.Reason = DecisionFailOpen, checker, f.reason
		return true
	}
	d.deny(checker, 503, ReasonAuthUnavailable, f.msg)
	return false
}

// readCredentials returns the API key (see apiKeyCredential) and the bearer token the
// request carries, each empty when absent.
func readCredentials(h map[string]string) (keyCred, bearer string) {
	if a := h["authorization"]; len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		bearer = strings.TrimSpace(a[7:])
	}
	return apiKeyCredential(h), bearer
}

// authenticate verifies the credentials the request carries (keyCred, bearer: see
// readCredentials) and applies the route's credential requirements (methods, issuers,
// audiences, scopes, roles).
func (e *Engine) authenticate(ctx context.Context, t *tables, rp *routePolicy, d *Decision, keyCred, bearer string, now time.Time) (*keyEntry, string, *authFailure) {
	if keyCred == "" && bearer == "" {
		d.Identity = Identity{Method: MethodNone}
		if rp.requireAuth {
			return nil, CheckerAuth, &authFailure{status: 401, reason: ReasonMissingCredentials, msg: "credentials are required"}
		}
		return nil, "", nil
	}
	// Oversized credentials are refused before any work: each byte is parsing, hashing or
	// (for an opaque token) an outbound call and a cache entry, at an anonymous caller's will.
	if len(bearer) > t.maxToken {
		return nil, CheckerAuth, &authFailure{status: 401, reason: ReasonInvalidToken, msg: "the bearer token is too long"}
	}
	if len(keyCred) > t.maxToken {
		return nil, CheckerAPIKey, &authFailure{status: 401, reason: ReasonInvalidAPIKey, msg: "the API key is not valid"}
	}
	var key *keyEntry
	id := Identity{Method: MethodNone}
	if keyCred != "" {
		if !rp.accepts(allowAPIKey) {
			return nil, CheckerAPIKey, &authFailure{status: 401, reason: ReasonMethodNotAccepted, msg: "API keys are not accepted on this route"}
		}
		k, ok := t.verifyKey(keyCred)
		if !ok {
			return nil, CheckerAPIKey, &authFailure{status: 401, reason: ReasonInvalidAPIKey, msg: "the API key is not valid"}
		}
		if status, reason, msg := k.checkUse(rp.id, d.ClientIP, now); status != 0 {
			return nil, CheckerAPIKey, &authFailure{status: status, reason: reason, msg: msg}
		}
		key = k
		id = Identity{Method: MethodAPIKey, APIKeyID: k.id, UserID: k.userID, Tenant: k.tenant, Scopes: k.scopes}
		d.memo = &k.memo
	}
	checker := CheckerAPIKey
	if bearer != "" {
		var tid Identity
		var aud []string
		isJWT := strings.Count(bearer, ".") == 2
		switch {
		case isJWT && len(t.issuers) > 0 && rp.accepts(allowJWT):
			checker = CheckerJWT
			ti, f := e.verifyJWT(ctx, t, rp, bearer, now)
			if f != nil {
				return nil, checker, f
			}
			tid, aud = ti.identity, ti.audiences
			d.memo, d.memoKey = &ti.memo, key
			if f := rp.refuses(tid.Issuer, aud); f != nil { // a cached verification
				return nil, checker, f
			}
		case t.introspection != nil && rp.accepts(allowIntrospection):
			checker = CheckerIntrospection
			ent, f := e.introspect(ctx, t.introspection, bearer, now)
			if f != nil {
				return nil, checker, f
			}
			if !ent.active {
				return nil, checker, &authFailure{status: 401, reason: ReasonTokenInactive, msg: "the bearer token is not active"}
			}
			tid, aud = ent.identity, ent.aud
			d.memo, d.memoKey = &ent.memo, key
		default:
			checker = CheckerJWT
			if !isJWT {
				checker = CheckerIntrospection
			}
			return nil, checker, &authFailure{status: 401, reason: ReasonMethodNotAccepted, msg: "bearer tokens are not accepted on this route"}
		}
		if len(rp.audiences) > 0 && !intersects(rp.audiences, aud) {
			return nil, checker, refusedAudience
		}
		if key != nil {
			// A key and a token sent together must name one principal, or two callers'
			// credentials would make one identity that neither has (alice's role with
			// mallory's scope). The token's identity decides (scopes, roles, claims); the
			// key only proves that the same principal sent the request, and keeps its own
			// restrictions and quota. An empty user id names no one, so it matches nothing.
			if !samePrincipal(&tid, &id) {
				return nil, checker, &authFailure{status: 403, reason: ReasonCredentialsMismatch,
					msg: "the API key and the bearer token do not belong to the same principal"}
			}
			tid.APIKeyID = id.APIKeyID
		}
		id = tid
	}
	d.Identity = id
	for _, s := range rp.scopes {
		if !contains(id.Scopes, s) {
			return nil, checker, &authFailure{status: 403, reason: ReasonInsufficientScope, msg: "the credentials lack a required scope"}
		}
	}
	if len(rp.roles) > 0 && !intersects(rp.roles, id.Roles) {
		return nil, checker, &authFailure{status: 403, reason: ReasonInsufficientRole, msg: "the credentials lack a required role"}
	}
	return key, "", nil
}

// checkTenant enforces tenant isolation: the caller's tenant must be the route's (and match
// the tenant header the route requires); disabled tenants are denied.
func (e *Engine) checkTenant(t *tables, rp *routePolicy, r *Request, id *Identity) (int, string, string) {
	routeTenant := rp.tenant
	if routeTenant == "" {
		routeTenant = r.Tenant
	}
	if id.Tenant != "" {
		if tn := t.tenants[id.Tenant]; tn != nil && tn.Disabled {
			return 403, ReasonTenantDisabled, "the tenant is disabled"
		}
	}
	authenticated := id.Method != MethodNone && id.Method != ""
	if routeTenant != "" {
		if tn := t.tenants[routeTenant]; tn != nil && tn.Disabled {
			return 403, ReasonTenantDisabled, "the tenant is disabled"
		}
		if authenticated && id.Tenant != routeTenant {
			return 403, ReasonTenantMismatch, "the credentials do not belong to this route's tenant"
		}
	}
	if rp.tenantHeader != "" {
		v := r.Headers[rp.tenantHeader]
		if v == "" || (authenticated && v != id.Tenant) || (routeTenant != "" && v != routeTenant) {
			return 403, ReasonTenantHeader, "the tenant header does not match the credentials"
		}
	}
	return 0, "", ""
}

func (e *Engine) countQuota(ctx context.Context, k *keyEntry, now time.Time) (bool, error) {
	day, dayTTL, month, monthTTL := quotaKeys(k.id, now)
	if k.perDay > 0 {
		n, err := e.quota.Incr(ctx, day, dayTTL)
		if err != nil {
			return false, err
		}
		if n > k.perDay {
			return true, nil
		}
	}
	if k.perMonth > 0 {
		n, err := e.quota.Incr(ctx, month, monthTTL)
		if err != nil {
			return false, err
		}
		if n > k.perMonth {
			return true, nil
		}
	}
	return false, nil
}

// identityHeaders fills the upstream header changes of an allowed request. Identity headers
// are always either set or removed, so a client can never smuggle its own x-user-id. It
// reports false when a value to forward is not a valid header value.
func (e *Engine) identityHeaders(t *tables, rp *routePolicy, d *Decision) bool {
	id := &d.Identity
	d.SetHeaders = make([]Header, 0, 4+len(rp.claims))
	d.RemoveHeaders = make([]string, 0, 6+len(rp.claims))
	valid := true
	set := func(name, v string) {
		if name == "" {
			return
		}
		if v == "" {
			d.RemoveHeaders = append(d.RemoveHeaders, name)
			return
		}
		if !validHeaderValue(v) {
			valid = false
			return
		}
		d.SetHeaders = append(d.SetHeaders, Header{Name: name, Value: v})
	}
	set(t.hdrUser, id.UserID)
	set(t.hdrTenant, id.Tenant)
	set(t.hdrKey, id.APIKeyID)
	set(t.hdrScopes, strings.Join(id.Scopes, " "))
	for _, ch := range rp.claims {
		v := ""
		if id.Claims != nil {
			v = claimString(id.Claims, ch.claim)
		}
		set(ch.header, v)
	}
	// Every credential the gateway read is removed, whether it made the identity or not: a
	// fail-open request (no identity) must not hand the upstream a token nobody checked.
	// An Authorization header of a scheme the gateway does not read (Basic) stays.
	if !t.keepCreds && (d.credentials || (id.Method != MethodNone && id.Method != "")) {
		d.RemoveHeaders = append(d.RemoveHeaders, "authorization", "x-api-key")
	}
	return valid
}

// validHeaderValue reports whether v may be sent as an HTTP header value: no control
// characters but horizontal tab (RFC 9110 field-value), so no CR/LF/NUL injection.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func challenge(checker, reason string) string {
	switch checker {
	case CheckerAPIKey:
		return `ApiKey realm="api-gateway"`
	case CheckerJWT, CheckerIntrospection:
		if reason == ReasonInsufficientScope {
			return `Bearer realm="api-gateway", error="insufficient_scope"`
		}
		return `Bearer realm="api-gateway", error="invalid_token"`
	}
	return `Bearer realm="api-gateway", ApiKey realm="api-gateway"`
}

func (e *Engine) logDecision(ctx context.Context, r *Request, d *Decision) {
	level := slog.LevelInfo
	if d.Outcome == DecisionAllow {
		level = slog.LevelDebug
	}
	if !e.log.Enabled(ctx, level) {
		return
	}
	ip := ""
	if d.ClientIP.IsValid() {
		ip = d.ClientIP.String()
	}
	e.log.LogAttrs(ctx, level, "authz decision",
		slog.String("request_id", r.ID), slog.String("route_id", r.RouteID),
		slog.String("decision", d.Outcome), slog.String("checker", d.Checker), slog.String("reason", d.Reason),
		slog.Int("status", d.Status), slog.String("auth_method", d.Identity.Method),
		slog.String("user_id", d.Identity.UserID), slog.String("tenant_id", d.Identity.Tenant),
		slog.String("api_key_id", d.Identity.APIKeyID), slog.String("client_ip", ip),
		slog.String("method", r.Method), slog.String("path", r.Path))
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if contains(b, x) {
			return true
		}
	}
	return false
}

// The route's refusals of a token (shared: an authFailure is never modified).
var (
	refusedIssuer   = &authFailure{status: 401, reason: ReasonInvalidIssuer, msg: "the token's issuer is not accepted on this route"}
	refusedAudience = &authFailure{status: 401, reason: ReasonInvalidAudience, msg: "the bearer token is not for this audience"}
)

// refuses returns the route's refusal of a JWT of issuer iss for audiences aud, or nil.
func (rp *routePolicy) refuses(iss string, aud []string) *authFailure {
	if rp.issuers != nil && !rp.issuers[iss] {
		return refusedIssuer
	}
	if len(rp.audiences) > 0 && !intersects(rp.audiences, aud) {
		return refusedAudience
	}
	return nil
}

// samePrincipal reports whether two verified identities name the same user of the same
// tenant (both tenant-less counts as the same tenant; a missing user id never matches).
func samePrincipal(a, b *Identity) bool {
	return a.UserID != "" && a.UserID == b.UserID && a.Tenant == b.Tenant
}
