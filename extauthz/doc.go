// Package extauthz answers Envoy's ext_authz Check (envoy.service.auth.v3.Authorization):
// a gRPC edge (server.go) over a pure engine that turns a Request into a Decision.
//
// # Tables
//
// The engine is a pipeline.RevisionConsumer. PrepareRevision compiles the revision's IR
// (ir.AuthzConfig: translate's one reading of the model, each route's settings resolved, the
// global IP rules and policies held once) into immutable tables (per-route policies with IP
// sets, country lists, compiled CEL programs, WAF checkers; API keys by prefix id with their
// hashes decoded; issuers, read from the snapshot) and the commit swaps them in with one
// atomic pointer store. A policy whose rules did not change is not compiled again. Nothing reads the store on the request path; a change applies on the
// next Check after the swap. The route is found by context_extensions["route_id"]; an
// unknown route id is denied (403 unknown_route); no route_id at all uses the global default
// (settings.auth; credentials required).
//
// # Checkers, in order
//
//  1. ip: deny entries win; allow entries (global, naming the route, or named by
//     route.auth.ip_rules) make an allow list. Expired entries stop matching at ExpiresAt
//     on the engine clock, even before the next snapshot. The client address is Envoy's
//     source address, or with settings.auth.trusted_proxy_hops the x-forwarded-for entry
//     left of the trusted ones.
//  2. geo: country deny/allow lists from policies (allow_countries/deny_countries) and the
//     WAF settings (geoblocking_enabled + blocked_countries), against GEOIP_DB (read with
//     maxminddb-golang, the reader under geoip2-golang, decoding only country.iso_code once
//     per database record). An unknown country fails allow lists and passes deny lists.
//  3. credentials: x-api-key (or "Authorization: ApiKey ..."; two different keys in one
//     request are refused) and/or "Authorization: Bearer" (a JWT when it has three parts
//     and issuers are configured, else RFC 7662 introspection). When both a key and a token
//     are sent both must verify and name the same principal: the same non-empty user id and
//     the same tenant (or both none), else 403 credentials_mismatch. The token's identity
//     (scopes, roles, claims) then decides; the key adds only its id, its restrictions and
//     its quota. Scopes and roles never combine across credentials. Bearer tokens longer
//     than settings.auth.max_token_bytes (default 8 KiB) are refused (401 invalid_token)
//     before any work. Then the route's methods, issuers, audiences, scopes (all) and roles
//     (any).
//  4. tenant: the credential's tenant must equal the route's (route.tenant, else
//     context_extensions["tenant"]) and the route's tenant_header; disabled tenants are
//     denied. The route's own tenant rules apply to fail-open requests too.
//  5. policy: CEL rules (see policy.go); the first true rule decides.
//  6. waf: the route's (or global) Coraza WAF, last.
//  7. quota: API key per-day/per-month usage, counted only for requests that passed
//     everything else (QuotaCounter: memory or Redis).
//
// # Answers
//
// Allow: identity headers (x-user-id, x-tenant-id, x-api-key-id, x-auth-scopes; renamed or
// disabled by settings.auth.identity_headers) are always set or removed, so a client cannot
// smuggle them; route.auth.claims_to_headers likewise; authorization and x-api-key are
// removed unless keep_credentials, whenever the request carried a credential the gateway
// reads (fail-open allows, and dry-run allows of requests an ip or geo rule denied before
// the credentials were checked, included: the upstream never gets a token nobody checked).
// A value to forward that holds control characters (CR, LF, NUL: header injection) denies
// the request (401 invalid_identity_value). IP entries are compared unmapped and without
// IPv6 zone. Dynamic metadata (namespace envoy.filters.http.ext_authz): user_id,
// api_key_id, tenant_id, auth_method (jwt|api_key|introspection|none), scopes.
//
// Deny: 401 + WWW-Authenticate for missing or bad credentials, 403 for forbidden, 429 for
// an exhausted quota, a policy rule's own status, and a JSON body
// {"error":{"code","message","request_id"}}. An unknown key id and a wrong secret get the
// same answer, after the same work (a SHA-256 and a constant-time compare either way).
//
// Public routes (require_auth false) need no credential, but a credential that is sent is
// verified: a bad one is a 401, not silently ignored.
//
// # Failure mode
//
// When a dependency fails (no JWKS keys could ever be fetched, introspection or the quota
// store unreachable) the request is denied with 503 auth_unavailable (fail closed, with
// Retry-After) by default: the caller's credentials are not wrong, the gateway cannot check
// them, and 503 tells clients to retry rather than re-authenticate. route.auth.fail_open (or
// settings.auth.fail_open) allows it instead, without an identity (auth_method none). Either
// way api_gateway_authz_dependency_failures_total{dependency,mode} counts it and a warning is
// logged. JWKS keys that were fetched once keep working while the endpoint is down.
//
// A check whose context is done (Envoy's ext_authz timeout passed, or it went away) stops
// before the next stage (credentials, policy, waf, quota): nobody reads the answer, so no
// outbound call, policy, WAF or quota unit is spent on it. It is denied (503
// deadline_exceeded, never fail-open or dry-run allowed) and counted in
// api_gateway_authz_checks_abandoned_total{stage}.
//
// route.auth.dry_run (or settings.auth.dry_run) decides, logs and counts
// (decision="dry_run_deny") but allows.
//
// # JWT
//
// Issuers come from settings.auth.jwt_issuers plus JWT_ISSUER/JWT_AUDIENCE/JWKS_ENDPOINT.
// Keys come from jwks_uri or OIDC discovery, are refreshed in the background before they go
// stale (Cache-Control max-age, capped by refresh_interval, default 5m), and are refetched at
// most once per refresh interval (default 30s) when a token names an unknown kid; such a
// fetch runs to its own 5s timeout even when the check that started it gives up (its
// deadline passed, or its client hung up), so a rotated key is not left unknown. Accepted
// algorithms: RS/PS/ES 256/384/512 and EdDSA; "none" and HMAC never (a key verifies only
// the algorithms of its own type and curve, and the JWK's own alg when it has one); tokens
// with a "crit" header are refused. Verified tokens are cached by token until exp (+
// leeway), bounded (65,536 entries), and re-verified when the issuer's key set or settings
// change.
//
// # Introspection
//
// Opaque tokens are checked with RFC 7662 introspection (settings.auth.introspection, or
// OAUTH2_INTROSPECTION_ENDPOINT). Any caller can send a new token, and each new token is an
// outbound call, so the cost is bounded: tokens over max_token_bytes are refused first;
// outbound calls are capped (max_calls_per_second, default 50, a token bucket holding one
// second's worth, per replica) and the excess is denied 503 auth_unavailable whatever the
// route's fail mode (fail_open is for an endpoint that is down, not for a budget any
// anonymous caller can spend) and counted in api_gateway_authz_introspection_throttled_total;
// concurrent checks of one token share one call; answers are cached by SHA-256 digest (never
// the token itself), in an LRU bounded in bytes (cache_bytes, default 16 MiB, at least
// 64 KiB), active ones until exp (at most cache_ttl, default 60s), inactive ones for 10s.
//
// Every decision is logged (debug for allow, info for deny) with request_id, route_id,
// identity, checker and reason, and counted in
// api_gateway_authz_decisions_total{checker,decision,reason}; the time to decide is
// api_gateway_authz_check_duration_seconds.
package extauthz
