package model

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"strings"
	"time"
)

// Route is one routing rule: which requests (hosts + conditions) go to which targets, and how.
// The JSON shape of the README this project grew from is accepted verbatim.
type Route struct {
	ID         string      `json:"id"`
	Name       string      `json:"name,omitempty"`
	Hosts      []string    `json:"hosts,omitempty"` // virtual hosts; default "*"
	Conditions []Condition `json:"conditions"`
	// Targets, Redirect and DirectResponse are the route's action: exactly one is set.
	Targets        []Target        `json:"targets,omitempty"`
	Redirect       *Redirect       `json:"redirect,omitempty"`
	DirectResponse *DirectResponse `json:"direct_response,omitempty"`
	// LoadBalance is round_robin (default), weighted, least_connections, ip_hash or random.
	LoadBalance string   `json:"load_balance,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`
	// Retries is the number of retries; RetryPolicy refines when and how.
	Retries     int          `json:"retries,omitempty"`
	RetryPolicy *RetryPolicy `json:"retry_policy,omitempty"`
	// RequireAuth: a credential (API key or JWT) is required. Default true. With false the
	// route is public: ext_authz is skipped unless the route has its own WAF, IP or policy rules.
	RequireAuth      *bool             `json:"require_auth,omitempty"`
	Auth             *RouteAuth        `json:"auth,omitempty"`
	Rewrite          *Rewrite          `json:"rewrite,omitempty"`
	RequestHeaders   *HeaderOps        `json:"request_headers,omitempty"`
	ResponseHeaders  *HeaderOps        `json:"response_headers,omitempty"`
	StickySession    *StickySession    `json:"sticky_session,omitempty"`
	Tenant           string            `json:"tenant,omitempty"`
	WAF              *WAFSettings      `json:"waf,omitempty"`
	RateLimit        *RouteRateLimit   `json:"rate_limit,omitempty"`
	HealthCheck      *HealthCheck      `json:"health_check,omitempty"`
	CircuitBreaker   *CircuitBreaker   `json:"circuit_breaker,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlier_detection,omitempty"`
	// Mirror sends a copy of a share of the route's requests to another upstream (shadow
	// traffic: its answers are dropped).
	Mirror *Mirror `json:"mirror,omitempty"`
	// Fault injects delays and aborts into a share of the route's requests (resilience tests).
	Fault *Fault `json:"fault,omitempty"`
	// IPRules and Policies name ip-rules / policies objects that apply to this route only
	// (objects whose own `routes` field lists the route apply too).
	Metadata map[string]string `json:"metadata,omitempty"`
	Meta
	// Status is filled by the server on reads (xDS state per node group); ignored on writes.
	Status *RouteStatus `json:"status,omitempty"`
}

// Condition is one match alternative; a request matches the route when any condition matches.
// Inside a condition every field must match.
type Condition struct {
	// PathPattern: "/x" exact, "/x/*" prefix "/x/", "/users/{id}/orders" template
	// (one segment per {var}, "{var=**}" any rest), "/" or "/*" everything.
	PathPattern string `json:"path_pattern,omitempty"`
	// PathPrefix and PathRegex (RE2, whole path) are explicit alternatives to PathPattern.
	PathPrefix string        `json:"path_prefix,omitempty"`
	PathRegex  string        `json:"path_regex,omitempty"`
	Method     string        `json:"method,omitempty"`
	Methods    []string      `json:"methods,omitempty"`
	Headers    []HeaderMatch `json:"headers,omitempty"`
	Query      []QueryMatch  `json:"query,omitempty"`
}

// HeaderMatch matches a request header. Exactly one of Exact, Prefix, Regex, Present.
type HeaderMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present *bool  `json:"present,omitempty"`
	Invert  bool   `json:"invert,omitempty"`
}

// QueryMatch matches a query parameter. Exactly one of Exact, Prefix, Regex, Present.
type QueryMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present *bool  `json:"present,omitempty"`
}

// Target is one upstream: a host and port (an IP or a DNS name), or a registered service.
type Target struct {
	Host    string `json:"host,omitempty"`
	Port    int    `json:"port,omitempty"`
	Service string `json:"service,omitempty"` // a registered service name instead of host/port
	Weight  *int   `json:"weight,omitempty"`  // default 1; relative to the route's other targets
	Healthy *bool  `json:"healthy,omitempty"` // false takes the target out of rotation
	// HealthPath turns on active HTTP health checks against this path.
	HealthPath string `json:"health_path,omitempty"`
	TLS        bool   `json:"tls,omitempty"`
	Protocol   string `json:"protocol,omitempty"` // http1 (default) | http2 | grpc
	// Upstream TLS verification (each only with tls: true; on a service target they apply to
	// every instance). By default the upstream's certificate chain is verified against the
	// CA bundle at ENVOY_UPSTREAM_CA_FILE on Envoy's machine and its name against the SNI (a
	// host name target's own name), or an IP target's address.
	TLSCAPEM     string   `json:"tls_ca_pem,omitempty" jsonschema:"description=PEM CA certificates (only CERTIFICATE blocks; at most 256 KiB) that the upstream's certificate must chain to instead of the system CA bundle; only with tls: true,maxLength=262144"`
	TLSSNI       string   `json:"tls_sni,omitempty" jsonschema:"description=the server name sent in the TLS handshake and verified against the upstream's certificate (default: the target's host name; none for an IP address); only with tls: true"`
	TLSVerifySAN []string `json:"tls_verify_san,omitempty" jsonschema:"description=DNS names or IP addresses of which the upstream's certificate must carry one as a subject alternative name (replaces the SNI name check); only with tls: true,maxItems=64"`
	// TLSInsecureSkipVerify turns verification off: the route's status shows a warning.
	TLSInsecureSkipVerify bool `json:"tls_insecure_skip_verify,omitempty" jsonschema:"description=accept any upstream certificate (no chain or name check: the connection can be intercepted); the route's status shows a warning; only with tls: true"`
}

// Upstream TLS limits.
const (
	// MaxTLSCAPEMBytes bounds tls_ca_pem: every cluster carries its bundle inline in CDS,
	// and a whole public bundle (about 220 KB) fits.
	MaxTLSCAPEMBytes = 256 << 10
	// MaxTLSVerifySANs bounds tls_verify_san.
	MaxTLSVerifySANs = 64
)

// RetryPolicy refines retries.
type RetryPolicy struct {
	RetryOn       []string `json:"retry_on,omitempty"` // Envoy retry_on values; default 5xx,reset,connect-failure (and unavailable with a protocol grpc target)
	PerTryTimeout Duration `json:"per_try_timeout,omitempty"`
	BaseInterval  Duration `json:"base_interval,omitempty"`
	MaxInterval   Duration `json:"max_interval,omitempty"`
	RetriableCode []int    `json:"retriable_status_codes,omitempty"`
}

// RouteAuth is the route's authentication and authorization requirements.
type RouteAuth struct {
	Methods  []string `json:"methods,omitempty"` // jwt, api_key, introspection; default any configured
	Scopes   []string `json:"scopes,omitempty"`  // required scopes (all of them)
	Roles    []string `json:"roles,omitempty"`   // required roles (any of them)
	Issuers  []string `json:"issuers,omitempty"` // JWT issuers accepted; default every configured issuer
	Audience []string `json:"audiences,omitempty"`
	// TenantHeader: when set the request must carry this header with the caller's tenant.
	TenantHeader string `json:"tenant_header,omitempty"`
	FailOpen     bool   `json:"fail_open,omitempty"` // allow when a dependency (JWKS, introspection) is down
	DryRun       bool   `json:"dry_run,omitempty"`   // decide, log and count, but allow
	// ClaimsToHeaders copies JWT claims to request headers: {"sub": "x-user-id"}.
	ClaimsToHeaders map[string]string `json:"claims_to_headers,omitempty"`
	Policies        []string          `json:"policies,omitempty"` // ids of policies for this route
	IPRules         []string          `json:"ip_rules,omitempty"` // ids of ip-rules for this route
}

// Rewrite changes the path (prefix or regex) and/or the Host header before forwarding.
type Rewrite struct {
	Prefix       string `json:"prefix,omitempty"` // replaces the matched prefix
	Regex        string `json:"regex,omitempty"`
	Substitution string `json:"substitution,omitempty"`
	Host         string `json:"host,omitempty"`
}

// HeaderOps adds, sets and removes headers.
type HeaderOps struct {
	Add    map[string]string `json:"add,omitempty"` // appended
	Set    map[string]string `json:"set,omitempty"` // overwrite
	Remove []string          `json:"remove,omitempty"`
}

// StickySession pins a client to an upstream host with a cookie (Envoy stateful_session).
type StickySession struct {
	Cookie string   `json:"cookie,omitempty"` // default "agw-session"
	TTL    Duration `json:"ttl,omitempty"`
	Path   string   `json:"path,omitempty"`
}

// HealthCheck configures active HTTP health checks for the route's targets.
type HealthCheck struct {
	Path               string   `json:"path,omitempty"`
	Interval           Duration `json:"interval,omitempty"`
	Timeout            Duration `json:"timeout,omitempty"`
	HealthyThreshold   int      `json:"healthy_threshold,omitempty"`
	UnhealthyThreshold int      `json:"unhealthy_threshold,omitempty"`
	ExpectedStatuses   []int    `json:"expected_statuses,omitempty"`
}

// CircuitBreaker sets Envoy's per-cluster thresholds.
type CircuitBreaker struct {
	MaxConnections     int `json:"max_connections,omitempty"`
	MaxPendingRequests int `json:"max_pending_requests,omitempty"`
	MaxRequests        int `json:"max_requests,omitempty"`
	MaxRetries         int `json:"max_retries,omitempty"`
}

// OutlierDetection ejects failing hosts.
type OutlierDetection struct {
	Consecutive5xx     int      `json:"consecutive_5xx,omitempty"`
	Interval           Duration `json:"interval,omitempty"`
	BaseEjectionTime   Duration `json:"base_ejection_time,omitempty"`
	MaxEjectionPercent int      `json:"max_ejection_percent,omitempty"`
}

// Mirror copies requests to a target or a registered service. Exactly one of Target, Service.
type Mirror struct {
	Target  *Target  `json:"target,omitempty"`
	Service string   `json:"service,omitempty"`
	Percent *float64 `json:"percent,omitempty" jsonschema:"minimum=0,maximum=100"` // share of requests mirrored, 0-100; default 100
}

// Fault injects a delay and/or an abort. At least one of Delay, Abort.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds a share of requests for Fixed before forwarding them.
type FaultDelay struct {
	Fixed   Duration `json:"fixed"`
	Percent *float64 `json:"percent,omitempty" jsonschema:"minimum=0,maximum=100"` // 0-100; default 100
}

// FaultAbort answers a share of requests itself, with an HTTP status or a gRPC status.
// Exactly one of Status, GRPCStatus.
type FaultAbort struct {
	Status     int      `json:"status,omitempty" jsonschema:"minimum=200,maximum=599"`   // HTTP status 200-599
	GRPCStatus *int     `json:"grpc_status,omitempty" jsonschema:"minimum=1,maximum=16"` // gRPC status code 1-16
	Percent    *float64 `json:"percent,omitempty" jsonschema:"minimum=0,maximum=100"`    // 0-100; default 100
}

// MaxFaultDelay bounds a fault's delay below Envoy's stream idle timeout: 5 minutes, the HTTP
// connection manager's default (StreamIdleTimeoutMs in
// source/extensions/filters/network/http_connection_manager/config.h), which the gateway
// leaves. The idle timer keeps running while the fault filter holds a fully received request,
// so a delay of 5 minutes or more ends every delayed request with Envoy's 408 "stream
// timeout" instead of forwarding it. 4 minutes leaves the upstream a minute (more than the
// default 15 s route timeout) to start answering.
const MaxFaultDelay = Duration(4 * time.Minute)

// PercentScale is how finely a percent is taken: Envoy's and the gRPC clients' fractional
// percents count per million, so a percent has at most 4 decimals.
const PercentScale = 10_000

// PercentOrAll is a percent field's value (nil: 100).
func PercentOrAll(p *float64) float64 {
	if p == nil {
		return 100
	}
	return *p
}

// percentProblem is what is wrong with a percent field ("" when nothing).
func percentProblem(p *float64) string {
	if p == nil {
		return ""
	}
	v := *p
	if math.IsNaN(v) || v < 0 || v > 100 {
		return "must be 0-100"
	}
	if scaled := v * PercentScale; math.Abs(scaled-math.Round(scaled)) > 1e-6 {
		return "must have at most 4 decimals (requests are counted per million)"
	}
	return ""
}

func (m *Mirror) validate(own []Target) FieldErrors {
	var errs FieldErrors
	switch {
	case m.Target != nil && m.Service != "":
		errs.Add("service", "set target or service, not both")
	case m.Target != nil:
		errs.Nest("target", m.Target.Validate())
		if m.Target.Weight != nil || m.Target.Healthy != nil || m.Target.HealthPath != "" {
			errs.Add("target", "a mirror target takes no weight, healthy or health_path")
		}
	case m.Service != "":
		if !validID(m.Service) {
			errs.Add("service", "must be a service name")
		}
	default:
		errs.Add("target", "set target or service")
	}
	for i := range own {
		t := &own[i]
		if m.Service != "" && t.Service == m.Service ||
			m.Target != nil && m.Target.Service != "" && t.Service == m.Target.Service && t.Port == m.Target.Port ||
			m.Target != nil && m.Target.Host != "" && strings.EqualFold(t.Host, m.Target.Host) && t.Port == m.Target.Port {
			// Every mirrored request would reach the upstream that serves it already.
			errs.Add("target", "mirrors to the route's own targets[%d]", i)
			break
		}
	}
	// A mirror copies the route's requests, credentials and ext_authz-approved bodies
	// included: when the route reaches an upstream over TLS, a plaintext copy would hand
	// them to anyone on the path to the mirror.
	for i := range own {
		if !own[i].TLS {
			continue
		}
		switch {
		case m.Service != "" && m.Target == nil:
			errs.Add("service", "targets[%d] uses TLS, and a mirror service is reached in plaintext: use \"target\": {\"service\": %q, \"tls\": true}", i, m.Service)
		case m.Target != nil && !m.Target.TLS:
			errs.Add("target.tls", "targets[%d] uses TLS: the mirror, which copies its requests, needs tls: true too", i)
		}
		break
	}
	if p := percentProblem(m.Percent); p != "" {
		errs.Add("percent", "%s", p)
	}
	return errs
}

func (f *Fault) validate() FieldErrors {
	var errs FieldErrors
	if f.Delay == nil && f.Abort == nil {
		errs.Add("delay", "set delay, abort or both")
	}
	if d := f.Delay; d != nil {
		if d.Fixed < Duration(time.Millisecond) || d.Fixed > MaxFaultDelay {
			// Envoy reads the delay in whole milliseconds (FaultDelayConfig,
			// source/extensions/filters/common/fault/fault_config.cc) and injects none of 0 ms.
			errs.Add("delay.fixed", "must be 1ms-%s", MaxFaultDelay)
		}
		if p := percentProblem(d.Percent); p != "" {
			errs.Add("delay.percent", "%s", p)
		}
	}
	if a := f.Abort; a != nil {
		switch {
		case a.Status != 0 && a.GRPCStatus != nil:
			errs.Add("abort.status", "set status or grpc_status, not both")
		case a.GRPCStatus != nil:
			if *a.GRPCStatus < 1 || *a.GRPCStatus > 16 {
				errs.Add("abort.grpc_status", "must be a gRPC status code 1-16")
			}
		case a.Status < 200 || a.Status > 599:
			// Envoy's FaultAbort.http_status: gte 200, lt 600.
			errs.Add("abort.status", "must be an HTTP status 200-599")
		}
		if p := percentProblem(a.Percent); p != "" {
			errs.Add("abort.percent", "%s", p)
		}
	}
	return errs
}

// RouteStatus is the xDS state of a route's resources, per node group.
type RouteStatus struct {
	Translation string               `json:"translation,omitempty"` // "ok" or why the route was left out
	XDS         map[string]XDSStatus `json:"xds,omitempty"`
	// Warnings: what the route is served with that an operator should know (an upstream
	// certificate not verified), each line naming the field.
	Warnings []string `json:"warnings,omitempty"`
}

// XDSStatus is the state of a resource at one node group.
type XDSStatus struct {
	State   string `json:"state"` // ACKED | NACKED | PENDING | OMITTED (left out of the group by design; Error says why)
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
	Node    string `json:"node,omitempty"`
}

// GetID returns the route id.
func (r *Route) GetID() string { return r.ID }

// SetID sets the route id.
func (r *Route) SetID(id string) { r.ID = id }

// AuthRequired reports whether a credential is required (default true).
func (r *Route) AuthRequired() bool { return r.RequireAuth == nil || *r.RequireAuth }

// LoadBalancers lists the accepted load_balance values.
var LoadBalancers = []string{"round_robin", "weighted", "least_connections", "ip_hash", "random"}

var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true}

var headerName = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

// Validate checks every field of the route.
func (r *Route) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, r.ID)
	for i, h := range r.Hosts {
		if p := virtualHostProblem(h); p != "" {
			errs.Add(fmt.Sprintf("hosts[%d]", i), "%s", p)
		}
	}
	if len(r.Conditions) == 0 {
		errs.Add("conditions", "at least one condition is required")
	}
	for i := range r.Conditions {
		errs.Nest(fmt.Sprintf("conditions[%d]", i), r.Conditions[i].Validate())
	}
	r.validateAction(&errs)
	total := 0
	for i := range r.Targets {
		t := &r.Targets[i]
		errs.Nest(fmt.Sprintf("targets[%d]", i), t.Validate())
		if t.Weight == nil {
			total++
		} else if *t.Weight > 0 {
			total += *t.Weight
		}
	}
	if len(r.Targets) > 0 && total == 0 {
		errs.Add("targets", "weights must not all be zero")
	}
	if r.LoadBalance != "" && !contains(LoadBalancers, r.LoadBalance) {
		errs.Add("load_balance", "must be one of %s", strings.Join(LoadBalancers, ", "))
	}
	if r.Timeout < 0 {
		errs.Add("timeout", "must not be negative")
	}
	if r.Retries < 0 || r.Retries > 10 {
		errs.Add("retries", "must be 0-10")
	}
	if p := r.RetryPolicy; p != nil {
		for i, on := range p.RetryOn {
			if !contains(retryOn, on) {
				errs.Add(fmt.Sprintf("retry_policy.retry_on[%d]", i), "must be one of %s", strings.Join(retryOn, ", "))
			}
		}
		if p.PerTryTimeout < 0 || p.BaseInterval < 0 || p.MaxInterval < 0 {
			errs.Add("retry_policy", "durations must not be negative")
		}
		if p.MaxInterval > 0 && p.BaseInterval > p.MaxInterval {
			errs.Add("retry_policy.max_interval", "must not be less than base_interval")
		}
		for i, c := range p.RetriableCode {
			if c < 100 || c > 599 {
				errs.Add(fmt.Sprintf("retry_policy.retriable_status_codes[%d]", i), "must be an HTTP status 100-599")
			}
		}
	}
	if a := r.Auth; a != nil {
		for i, m := range a.Methods {
			if !contains([]string{"jwt", "api_key", "introspection"}, m) {
				errs.Add(fmt.Sprintf("auth.methods[%d]", i), "must be jwt, api_key or introspection")
			}
		}
		if a.TenantHeader != "" && !headerName.MatchString(a.TenantHeader) {
			errs.Add("auth.tenant_header", "must be a valid header name")
		}
		for claim, h := range a.ClaimsToHeaders {
			if claim == "" || !headerName.MatchString(h) {
				errs.Add("auth.claims_to_headers."+claim, "must map a claim to a valid header name")
			}
		}
	}
	if rw := r.Rewrite; rw != nil {
		if rw.Prefix != "" && rw.Regex != "" {
			errs.Add("rewrite", "set prefix or regex, not both")
		}
		if rw.Prefix != "" && !strings.HasPrefix(rw.Prefix, "/") {
			errs.Add("rewrite.prefix", "must start with '/'")
		}
		if rw.Host != "" {
			if p := hostHeaderProblem(rw.Host); p != "" {
				errs.Add("rewrite.host", "%s", p)
			}
		}
		if rw.Regex != "" {
			if _, err := regexp.Compile(rw.Regex); err != nil {
				errs.Add("rewrite.regex", "invalid regular expression: %v", err)
			}
		}
	}
	errs.Nest("request_headers", r.RequestHeaders.validate())
	errs.Nest("response_headers", r.ResponseHeaders.validate())
	if s := r.StickySession; s != nil {
		if s.Cookie != "" && !headerName.MatchString(s.Cookie) {
			errs.Add("sticky_session.cookie", "must be a valid cookie name")
		}
		if s.TTL < 0 {
			errs.Add("sticky_session.ttl", "must not be negative")
		}
		if p := cookiePathProblem(s.Path); p != "" {
			errs.Add("sticky_session.path", "%s", p)
		}
	}
	if r.Tenant != "" && !validID(r.Tenant) {
		errs.Add("tenant", "must be a tenant id")
	}
	errs.Nest("waf", r.WAF.Validate())
	if r.RateLimit != nil {
		errs.Nest("rate_limit", r.RateLimit.Validate())
	}
	if hc := r.HealthCheck; hc != nil {
		if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
			errs.Add("health_check.path", "must start with '/'")
		}
		if hc.Interval < 0 || hc.Timeout < 0 {
			errs.Add("health_check", "durations must not be negative")
		}
		if hc.HealthyThreshold < 0 || hc.UnhealthyThreshold < 0 {
			errs.Add("health_check", "thresholds must not be negative")
		}
		for i, c := range hc.ExpectedStatuses {
			if c < 100 || c > 599 {
				errs.Add(fmt.Sprintf("health_check.expected_statuses[%d]", i), "must be an HTTP status 100-599")
			}
		}
	}
	if cb := r.CircuitBreaker; cb != nil && (cb.MaxConnections < 0 || cb.MaxPendingRequests < 0 || cb.MaxRequests < 0 || cb.MaxRetries < 0) {
		errs.Add("circuit_breaker", "thresholds must not be negative")
	}
	if od := r.OutlierDetection; od != nil {
		if od.Consecutive5xx < 0 || od.Interval < 0 || od.BaseEjectionTime < 0 {
			errs.Add("outlier_detection", "values must not be negative")
		}
		if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
			errs.Add("outlier_detection.max_ejection_percent", "must be 0-100")
		}
	}
	if r.Mirror != nil {
		errs.Nest("mirror", r.Mirror.validate(r.Targets))
	}
	if r.Fault != nil {
		errs.Nest("fault", r.Fault.validate())
	}
	return errs
}

var retryOn = []string{"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
	"envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
	"http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// Validate checks one condition.
func (c *Condition) Validate() FieldErrors {
	var errs FieldErrors
	set := 0
	for _, s := range []string{c.PathPattern, c.PathPrefix, c.PathRegex} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		errs.Add("path_pattern", "set only one of path_pattern, path_prefix, path_regex")
	}
	if c.PathPattern != "" {
		if _, err := ParsePathPattern(c.PathPattern); err != nil {
			errs.Add("path_pattern", "%v", err)
		}
	}
	if c.PathPrefix != "" && !strings.HasPrefix(c.PathPrefix, "/") {
		errs.Add("path_prefix", "must start with '/'")
	}
	if c.PathRegex != "" {
		if _, err := regexp.Compile(c.PathRegex); err != nil {
			errs.Add("path_regex", "invalid regular expression: %v", err)
		}
	}
	if c.Method != "" && !httpMethods[strings.ToUpper(c.Method)] {
		errs.Add("method", "must be an HTTP method (GET, POST, ...)")
	}
	for i, m := range c.Methods {
		if !httpMethods[strings.ToUpper(m)] {
			errs.Add(fmt.Sprintf("methods[%d]", i), "must be an HTTP method (GET, POST, ...)")
		}
	}
	for i, h := range c.Headers {
		errs.Nest(fmt.Sprintf("headers[%d]", i), validateMatcher(h.Name, h.Exact, h.Prefix, h.Regex, h.Present, true))
	}
	for i, q := range c.Query {
		errs.Nest(fmt.Sprintf("query[%d]", i), validateMatcher(q.Name, q.Exact, q.Prefix, q.Regex, q.Present, false))
	}
	return errs
}

func validateMatcher(name, exact, prefix, re string, present *bool, header bool) FieldErrors {
	var errs FieldErrors
	if name == "" {
		errs.Add("name", "is required")
	} else if header && !headerName.MatchString(name) {
		errs.Add("name", "must be a valid header name")
	}
	n := 0
	for _, s := range []string{exact, prefix, re} {
		if s != "" {
			n++
		}
	}
	if present != nil {
		n++
	}
	if n != 1 {
		errs.Add("exact", "set exactly one of exact, prefix, regex, present")
	}
	if re != "" {
		if _, err := regexp.Compile(re); err != nil {
			errs.Add("regex", "invalid regular expression: %v", err)
		}
	}
	return errs
}

// Validate checks one target.
func (t *Target) Validate() FieldErrors {
	var errs FieldErrors
	switch {
	case t.Service != "" && t.Host != "":
		errs.Add("service", "set host and port, or service, not both")
	case t.Service != "":
		if !validID(t.Service) {
			errs.Add("service", "must be a service name")
		}
		if t.Port != 0 && (t.Port < 1 || t.Port > 65535) {
			errs.Add("port", "must be 1-65535")
		}
	default:
		if t.Host == "" {
			errs.Add("host", "is required (or set service)")
		} else if !validHost(t.Host) {
			errs.Add("host", "must be an IP address or a DNS name")
		}
		if t.Port < 1 || t.Port > 65535 {
			errs.Add("port", "must be 1-65535")
		}
	}
	if t.Weight != nil && (*t.Weight < 0 || *t.Weight > 1_000_000) {
		errs.Add("weight", "must be 0-1000000")
	}
	if t.HealthPath != "" && !strings.HasPrefix(t.HealthPath, "/") {
		errs.Add("health_path", "must start with '/'")
	}
	switch t.Protocol {
	case "", "http1", "http2", "grpc":
	default:
		errs.Add("protocol", "must be http1, http2 or grpc")
	}
	t.validateTLS(&errs)
	return errs
}

// EffectiveWeight is the target's weight (default 1).
func (t *Target) EffectiveWeight() int {
	if t.Weight == nil {
		return 1
	}
	return *t.Weight
}

var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if !dnsLabel.MatchString(l) {
			return false
		}
	}
	return true
}

func (h *HeaderOps) validate() FieldErrors {
	var errs FieldErrors
	if h == nil {
		return nil
	}
	for k := range h.Add {
		if !headerName.MatchString(k) {
			errs.Add("add."+k, "must be a valid header name")
		}
	}
	for k := range h.Set {
		if !headerName.MatchString(k) {
			errs.Add("set."+k, "must be a valid header name")
		}
	}
	for i, k := range h.Remove {
		if !headerName.MatchString(k) {
			errs.Add(fmt.Sprintf("remove[%d]", i), "must be a valid header name")
		}
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
