package extauthz

import (
	"net/netip"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Request is what the engine decides on. The gRPC server builds it from Envoy's CheckRequest
// (see FromCheckRequest); tests and benchmarks may build it directly.
type Request struct {
	ID      string // x-request-id (Envoy's request id)
	RouteID string // context_extensions["route_id"]
	// HasRouteID is true when Envoy sent a route_id (even an empty one); without it the
	// global default applies.
	HasRouteID bool
	Tenant     string // context_extensions["tenant"]
	Method     string
	Path       string // without the query
	RawQuery   string
	Host       string
	Scheme     string
	// Headers has lowercase names, as Envoy sends them (including pseudo headers).
	Headers map[string]string
	// Source is Envoy's source.address (the downstream peer).
	Source netip.Addr
	// Raw is the CheckRequest as received, for the WAF (may be nil outside the server).
	Raw *authv3.CheckRequest
}

// Auth methods reported in dynamic metadata (auth_method).
const (
	MethodJWT           = "jwt"
	MethodAPIKey        = "api_key"
	MethodIntrospection = "introspection"
	MethodNone          = "none"
)

// Identity is who the caller is, established by the credential checkers.
type Identity struct {
	Method   string // jwt | api_key | introspection | none
	UserID   string
	Tenant   string
	APIKeyID string
	Issuer   string
	Scopes   []string
	Roles    []string
	Claims   map[string]any
}

// Checker names (the `checker` label and log field).
const (
	CheckerRoute         = "route"
	CheckerIP            = "ip"
	CheckerGeo           = "geo"
	CheckerAuth          = "auth" // no usable credential
	CheckerAPIKey        = "api_key"
	CheckerJWT           = "jwt"
	CheckerIntrospection = "introspection"
	CheckerTenant        = "tenant"
	CheckerPolicy        = "policy"
	CheckerWAF           = "waf"
	CheckerQuota         = "quota"
	CheckerNone          = "none"     // allowed: every checker passed
	CheckerDeadline      = "deadline" // abandoned: the check's deadline passed between stages
)

// Reason codes: the JSON error code of a denial and the `reason` label.
const (
	ReasonOK                  = "ok"
	ReasonUnknownRoute        = "unknown_route"
	ReasonIPDenied            = "ip_denied"
	ReasonIPNotAllowed        = "ip_not_allowed"
	ReasonCountryDenied       = "country_denied"
	ReasonCountryNotAllowed   = "country_not_allowed"
	ReasonMissingCredentials  = "missing_credentials"
	ReasonMethodNotAccepted   = "credential_not_accepted"
	ReasonInvalidAPIKey       = "invalid_api_key"
	ReasonAPIKeyRevoked       = "api_key_revoked"
	ReasonAPIKeyExpired       = "api_key_expired"
	ReasonKeyIPNotAllowed     = "api_key_ip_not_allowed"
	ReasonKeyOutsideWindow    = "api_key_outside_time_window"
	ReasonKeyRouteNotAllowed  = "api_key_route_not_allowed"
	ReasonQuotaExceeded       = "quota_exceeded"
	ReasonInvalidToken        = "invalid_token"
	ReasonInvalidSignature    = "invalid_signature"
	ReasonTokenExpired        = "token_expired"
	ReasonTokenNotYetValid    = "token_not_yet_valid"
	ReasonInvalidIssuer       = "invalid_issuer"
	ReasonInvalidAudience     = "invalid_audience"
	ReasonUnknownKey          = "unknown_signing_key"
	ReasonTokenInactive       = "token_inactive"
	ReasonInsufficientScope   = "insufficient_scope"
	ReasonInsufficientRole    = "insufficient_role"
	ReasonTenantMismatch      = "tenant_mismatch"
	ReasonTenantHeader        = "tenant_header_mismatch"
	ReasonTenantDisabled      = "tenant_disabled"
	ReasonPolicyDenied        = "policy_denied"
	ReasonWAFBlocked          = "waf_blocked"
	ReasonWAFInvalid          = "waf_invalid" // the route's own WAF rules do not compile: it denies
	ReasonAuthUnavailable     = "auth_unavailable"
	ReasonCredentialsMismatch = "credentials_mismatch"
	ReasonInvalidIdentity     = "invalid_identity_value"
	// ReasonDeadlineExceeded: the check was abandoned, its deadline passed (nobody reads it).
	ReasonDeadlineExceeded = "deadline_exceeded"
)

// Decision values of the decisions metric.
const (
	DecisionAllow    = "allow"
	DecisionDeny     = "deny"
	DecisionDryRun   = "dry_run_deny" // would have been denied; allowed because of dry_run
	DecisionFailOpen = "fail_open"    // a dependency failed; allowed because of fail_open
)

// Header is one header to set on the upstream request.
type Header struct{ Name, Value string }

// Decision is the engine's answer.
type Decision struct {
	Allowed bool
	// Status is the HTTP status of a denial (401, 403, 429, 503, or a policy's own).
	Status  int
	Reason  string
	Message string
	Checker string
	// Outcome is the decisions-metric value (allow, deny, dry_run_deny, fail_open).
	Outcome  string
	RouteID  string
	Identity Identity
	ClientIP netip.Addr
	Country  string
	// Challenge is the WWW-Authenticate value of a 401.
	Challenge string
	// SetHeaders / RemoveHeaders change the upstream request on allow.
	SetHeaders    []Header
	RemoveHeaders []string
	// SetQuery sets query parameters on the upstream request on allow.
	SetQuery []Header

	// credentials is true when the request carried a credential the gateway reads (an API
	// key or a bearer token), verified or not: those headers are removed on allow.
	credentials bool

	// memo, when set, lets the server reuse the answer it built for the same credential on
	// the same route (of the same tables): the answer depends on nothing else.
	memo      *respMemo
	memoRoute *routePolicy
	memoKey   *keyEntry // the API key sent with a token (the answer depends on both)
}

// respMemo holds one built answer of a credential (an API key or a verified token).
type respMemo struct {
	p atomic.Pointer[memoEntry]
}

type memoEntry struct {
	rp   *routePolicy
	key  *keyEntry
	resp any
}

func (d *Decision) deny(checker string, status int, reason, msg string) {
	d.Allowed, d.Checker, d.Status, d.Reason, d.Message, d.Outcome = false, checker, status, reason, msg, ""
}
