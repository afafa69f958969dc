// Package ir is the gateway's small intermediate representation: what translate produces
// from the model, once per revision, and what every consumer compiles: the envoy builders
// (routes, clusters, listeners), ext_authz (AuthzConfig: each route's settings resolved, the
// global IP rules and policies held once) and the rate-limit service (RateLimitConfig).
// It imports neither REST nor Envoy types. Every type has a Validate method; a Config whose
// parts validate can be built into Envoy resources without further checks of the model.
//
// IR values are immutable once translate returns them, down to their slices and maps: the
// memoizing translator (translate.Translator) hands the same *Route and *Cluster objects to
// every later revision whose inputs did not change, and the consumers recall what they built
// from an object by its identity (envoy.Memo takes the Envoy route or cluster built from the
// same *Route or *Cluster without hashing or validating it again). A consumer reads the IR and
// never writes it; code that needs a changed value copies it first (see translate's
// virtualHosts, which makes new VirtualHosts and route slices around shared routes).
// Race-enabled builds, as the tests run, re-hash every object envoy.Memo reuses and panic if
// it changed (envoy's TestMemoDetectsMutatedIR).
package ir

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"
)

// Well-known names shared with the other components (the bootstrap and the translator must agree on them).
const (
	// ControlPlaneCluster is the cluster of this binary's gRPC services (ext_authz, rate limit, ALS).
	ControlPlaneCluster = "api_gateway_grpc"
	// OTLPCluster is the OpenTelemetry collector's cluster.
	OTLPCluster = "otel_collector"
	// RateLimitDomainName is the domain of the generated rate-limit descriptors.
	RateLimitDomainName = "api-gateway"
	// AccessLogName is the ALS log_name.
	AccessLogName = "api-gateway"
	// ExtAuthzRouteIDKey and ExtAuthzTenantKey are the ext_authz context_extensions keys.
	ExtAuthzRouteIDKey = "route_id"
	ExtAuthzTenantKey  = "tenant"
	// DefaultAuthzTimeout bounds a Check call on a route whose checks read no body (Envoy's
	// ext_authz filter timeout: the gRPC deadline Envoy sends with the call).
	DefaultAuthzTimeout = 2 * time.Second
)

// Config is the whole translated configuration at one model revision.
type Config struct {
	Revision uint64
	// Listener is the HTTP listener served to Envoy.
	Listener Listener
	// ControlPlane is where Envoy reaches this binary's gRPC port.
	ControlPlane Address
	// OTLP is the OpenTelemetry collector (nil: no tracing).
	OTLP *Address
	// ServiceName names this gateway in traces.
	ServiceName string
	// VirtualHosts are sorted by name; each one's routes are most specific first.
	VirtualHosts []*VirtualHost
	// Clusters are sorted by name.
	Clusters []*Cluster
	// ServiceHosts are registered service names: proxyless gRPC clients dialing
	// xds:///NAME reach the service directly unless a route names that host (sorted).
	ServiceHosts []*ServiceHost
	// RouteErrors: routes left out, by id, with the reason.
	RouteErrors map[string]string
	// RouteWarnings: translated routes served with something their status must point out
	// (an upstream certificate not verified), by id, each line naming the field.
	RouteWarnings map[string][]string
	// Routes lists the ids of the routes that were translated (sorted).
	Routes []string
	// Authz is what ext_authz compiles: each translated route's settings and the sets every
	// route shares (nil only in a Config written by hand).
	Authz *AuthzConfig
	// RateLimit is what the rate-limit service compiles.
	RateLimit RateLimitConfig
}

// RateLimitConfig holds every rate-limit domain served and the objects left out of them
// (one line each, naming the object).
type RateLimitConfig struct {
	Domains  []RateLimitDomain
	Problems []string
}

// Listener is an HTTP listener address.
type Listener struct {
	Name    string
	Address string
	Port    uint32
}

// Address is a host and port.
type Address struct {
	Host string
	Port uint32
}

// ServiceHost is a registered service name served to gRPC clients as a virtual host.
type ServiceHost struct {
	Name    string
	Cluster string
}

// VirtualHost is a set of domains and their routes.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []*Route
}

// PathKind says how a route matches the path.
type PathKind string

// Path match kinds.
const (
	PathExact  PathKind = "exact"
	PathPrefix PathKind = "prefix"
	PathRegex  PathKind = "regex"
)

// StringMatchKind says how a header or query value is matched.
type StringMatchKind string

// String match kinds.
const (
	MatchExact   StringMatchKind = "exact"
	MatchPrefix  StringMatchKind = "prefix"
	MatchRegex   StringMatchKind = "regex"
	MatchPresent StringMatchKind = "present"
)

// Match selects requests.
type Match struct {
	PathKind PathKind
	Path     string   // exact path, prefix, or RE2 regex of the whole path
	Methods  []string // upper case, sorted; empty = any
	Headers  []StringMatch
	Query    []StringMatch
}

// StringMatch matches one header or query parameter.
type StringMatch struct {
	Name   string
	Kind   StringMatchKind
	Value  string
	Absent bool // for present: match when absent
	Invert bool
}

// Backend is one weighted cluster of a route.
type Backend struct {
	Cluster string
	Weight  uint32
}

// Route is one Envoy route: one condition of a model route.
type Route struct {
	// Name is the model route id for its first condition, "<id>/<n>" for the others.
	Name    string
	RouteID string
	Tenant  string
	Match   Match
	// Backends: one per target, weights > 0 (targets with weight 0 are left out). Empty for a
	// route that answers itself (Redirect or DirectResponse set: exactly one of the three).
	Backends []Backend
	// Redirect answers with a redirect; DirectResponse with a fixed response.
	Redirect       *Redirect
	DirectResponse *DirectResponse
	// HashSourceIP turns on a source-ip hash policy (ip_hash).
	HashSourceIP bool
	Timeout      time.Duration // 0: Envoy's default
	Retry        *Retry
	// PrefixRewrite replaces the matched prefix; RegexRewrite rewrites the whole path.
	PrefixRewrite   string
	RegexRewrite    *RegexRewrite
	HostRewrite     string
	RequestHeaders  HeaderOps
	ResponseHeaders HeaderOps
	Sticky          *Sticky
	Authz           Authz
	RateLimits      []RateLimit
	// OwnChecks names, sorted, the model fields by which the route itself asks for a check
	// that only Envoy applies (ext_authz, rate limits): "require_auth", "tenant",
	// "auth.ip_rules", "auth.policies", "auth.tenant_header", "ip-rules/<id>" and
	// "policies/<id>" (objects naming the route), "waf", "waf.geoblocking_enabled",
	// "rate_limit.policies", "rate_limit.limits". Edge-wide protections (global IP rules,
	// WAF bans among them, global policies, the settings' WAF and rate limits) are not the
	// route's own: Authz.Enabled and RateLimits may come from them alone. The gRPC flavor
	// leaves out a route with own checks (proxyless clients call backends directly).
	OwnChecks []string
	// Mirror copies a share of the requests to another cluster (Envoy flavor only).
	Mirror *Mirror
	// Fault injects delays and aborts.
	Fault *Fault
}

// Mirror is a request mirror policy: PerMillion of the requests go to Cluster too.
type Mirror struct {
	Cluster    string
	PerMillion uint32
}

// Fault is a route's fault injection. Delay 0: no delay; AbortHTTP and AbortGRPC 0: no abort
// (at most one is set).
type Fault struct {
	Delay           time.Duration
	DelayPerMillion uint32
	AbortHTTP       uint32
	AbortGRPC       uint32
	AbortPerMillion uint32
}

// Redirect is a redirect action: the request's URL with the scheme, host and path changed.
type Redirect struct {
	HTTPS bool
	Host  string // host[:port]; "": the request's
	// Path replaces the whole path, PrefixRewrite the matched prefix (a prefix match only);
	// at most one.
	Path          string
	PrefixRewrite string
	Status        uint32 // 301, 302, 303, 307 or 308
}

// DirectResponse is a fixed response.
type DirectResponse struct {
	Status      uint32 // 200-599
	Body        string
	ContentType string // "": Envoy's text/plain for a body
}

// Retry is a retry policy.
type Retry struct {
	NumRetries uint32
	RetryOn    []string
	// DefaultRetryOn: the route names no retry_on (RetryOn is the default). Proxyless
	// clients, whose calls are all gRPC, then retry UNAVAILABLE too, whatever the targets'
	// protocol.
	DefaultRetryOn       bool
	PerTryTimeout        time.Duration
	BaseInterval         time.Duration
	MaxInterval          time.Duration
	RetriableStatusCodes []uint32
}

// RegexRewrite rewrites the path with an RE2 pattern and substitution.
type RegexRewrite struct {
	Pattern      string
	Substitution string
}

// HeaderOps adds and removes headers. Add is sorted by name.
type HeaderOps struct {
	Add    []HeaderValue
	Remove []string
}

// HeaderValue is one header to add; Append false overwrites.
type HeaderValue struct {
	Name   string
	Value  string
	Append bool
}

// Sticky pins clients to an upstream host with a cookie.
type Sticky struct {
	Cookie string
	TTL    time.Duration
	Path   string
}

// Authz is the ext_authz setting of a route.
type Authz struct {
	Enabled           bool
	ContextExtensions map[string]string
	// WithBody buffers the whole body, up to MaxBodyBytes, for the check (WAF routes): a
	// larger body is refused by Envoy with 413 and never sent in part.
	WithBody     bool
	MaxBodyBytes uint32
	// Timeout bounds the Check call (0: DefaultAuthzTimeout, the filter's); another value is
	// served as the route's own grpc_service timeout (envoy/httpfilters.go).
	Timeout time.Duration
}

// Validate checks the ext_authz setting of a route with the given id.
func (a *Authz) Validate(routeID string) error {
	if !a.Enabled {
		if a.WithBody || a.Timeout != 0 {
			return errors.New("ext_authz body or timeout set with ext_authz off")
		}
		return nil
	}
	if a.ContextExtensions[ExtAuthzRouteIDKey] != routeID {
		return errors.New("ext_authz context must carry the route id")
	}
	if a.WithBody && a.MaxBodyBytes == 0 {
		return errors.New("ext_authz with the body needs a body size limit")
	}
	if a.Timeout < 0 || a.Timeout > MaxAuthzTimeout {
		return fmt.Errorf("ext_authz timeout %s is out of range (0-%s)", a.Timeout, MaxAuthzTimeout)
	}
	if a.Timeout%time.Millisecond != 0 {
		return fmt.Errorf("ext_authz timeout %s is not a whole number of milliseconds", a.Timeout)
	}
	return nil
}

// MaxAuthzTimeout bounds a route's Check timeout: Envoy holds the request (and its buffered
// body) that long.
const MaxAuthzTimeout = 5 * time.Minute

// Discovery is how a cluster finds its endpoints.
type Discovery string

// Discovery kinds.
const (
	DiscoveryEDS Discovery = "eds"
	DiscoveryDNS Discovery = "dns"
)

// LBPolicy is a load-balancing policy.
type LBPolicy string

// Load-balancing policies.
const (
	LBRoundRobin   LBPolicy = "round_robin"
	LBLeastRequest LBPolicy = "least_request"
	LBRingHash     LBPolicy = "ring_hash"
	LBRandom       LBPolicy = "random"
)

// Cluster is one upstream cluster.
type Cluster struct {
	Name    string
	RouteID string // "" for service clusters
	// Service is the registered service whose instances are the endpoints ("" for a
	// route's host targets): status reasons name it.
	Service string
	// Target is the index in its route's targets of the (first) target the cluster
	// carries; 0 for service clusters. Status reasons name the field targets[Target].
	Target    int
	Discovery Discovery
	LB        LBPolicy
	// Endpoints are sorted by host and port; for EDS they make the ClusterLoadAssignment.
	Endpoints []Endpoint
	HTTP2     bool
	TLS       bool
	// SNI is the server name sent ("" none).
	SNI string
	// Upstream certificate verification (TLS only). Unless SkipVerify, the chain is verified
	// against TrustedCAPEM (inline PEM) or else TrustedCAFile (a path on Envoy's machine),
	// and the name against SANs (any one matches) or, with AutoHostSNI, against the host
	// name of each endpoint, which is then also the SNI.
	TrustedCAPEM  string
	TrustedCAFile string
	SANs          []SAN
	AutoHostSNI   bool
	SkipVerify    bool

	ConnectTimeout time.Duration
	HealthCheck    *HealthCheck
	Outlier        *Outlier
	Circuit        *CircuitBreaker
}

// SANKind is the type of a subject alternative name.
type SANKind string

// SAN kinds.
const (
	SANDNS SANKind = "dns"
	SANIP  SANKind = "ip"
)

// SAN is a subject alternative name the upstream certificate may carry: a DNS name matched
// by DNS rules (a wildcard certificate name covers one label) or an IP address, exactly.
type SAN struct {
	Kind  SANKind
	Value string
}

// Endpoint is one upstream address.
type Endpoint struct {
	Host   string
	Port   uint32
	Weight uint32
}

// HealthCheck is an active HTTP health check.
type HealthCheck struct {
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	HealthyThreshold   uint32
	UnhealthyThreshold uint32
	ExpectedStatuses   []uint32
}

// Outlier is outlier detection.
type Outlier struct {
	Consecutive5xx     uint32
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionPercent uint32
}

// CircuitBreaker holds the default-priority thresholds (0 = Envoy's default).
type CircuitBreaker struct {
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
}

// Validate checks the whole configuration: names unique, references resolve.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Listener.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("listener: %w", err))
	}
	if err := c.ControlPlane.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("control plane: %w", err))
	}
	if c.OTLP != nil {
		if err := c.OTLP.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("otlp: %w", err))
		}
	}
	clusters := make(map[string]bool, len(c.Clusters))
	for _, cl := range c.Clusters {
		if clusters[cl.Name] {
			errs = append(errs, fmt.Errorf("cluster %q: duplicate name", cl.Name))
		}
		clusters[cl.Name] = true
		if err := cl.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("cluster %q: %w", cl.Name, err))
		}
	}
	vhosts := map[string]bool{}
	domains := map[string]bool{}
	for _, vh := range c.VirtualHosts {
		if vhosts[vh.Name] {
			errs = append(errs, fmt.Errorf("virtual host %q: duplicate name", vh.Name))
		}
		vhosts[vh.Name] = true
		for _, d := range vh.Domains {
			if domains[d] {
				errs = append(errs, fmt.Errorf("virtual host %q: domain %q is used twice", vh.Name, d))
			}
			domains[d] = true
		}
		if err := vh.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("virtual host %q: %w", vh.Name, err))
		}
		for _, r := range vh.Routes {
			for _, b := range r.Backends {
				if !clusters[b.Cluster] {
					errs = append(errs, fmt.Errorf("route %q: cluster %q does not exist", r.Name, b.Cluster))
				}
			}
		}
	}
	for _, s := range c.ServiceHosts {
		if s.Name == "" || !clusters[s.Cluster] {
			errs = append(errs, fmt.Errorf("service host %q: cluster %q does not exist", s.Name, s.Cluster))
		}
	}
	if err := c.Authz.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("authz: %w", err))
	}
	return errors.Join(errs...)
}

// Validate checks the listener.
func (l Listener) Validate() error {
	if l.Name == "" {
		return errors.New("name is required")
	}
	if net.ParseIP(l.Address) == nil {
		return fmt.Errorf("address %q is not an IP address", l.Address)
	}
	if l.Port == 0 || l.Port > 65535 {
		return fmt.Errorf("port %d is out of range", l.Port)
	}
	return nil
}

// Validate checks the address.
func (a Address) Validate() error {
	if a.Host == "" {
		return errors.New("host is required")
	}
	if a.Port == 0 || a.Port > 65535 {
		return fmt.Errorf("port %d is out of range", a.Port)
	}
	return nil
}

// Validate checks the virtual host and its routes.
func (v *VirtualHost) Validate() error {
	if v.Name == "" || len(v.Domains) == 0 {
		return errors.New("a name and at least one domain are required")
	}
	names := map[string]bool{}
	for _, r := range v.Routes {
		if names[r.Name] {
			return fmt.Errorf("route %q: duplicate name", r.Name)
		}
		names[r.Name] = true
		if err := r.Validate(); err != nil {
			return fmt.Errorf("route %q: %w", r.Name, err)
		}
	}
	return nil
}

// Validate checks one route.
func (r *Route) Validate() error {
	if r.Name == "" || r.RouteID == "" {
		return errors.New("name and route id are required")
	}
	if err := r.Match.Validate(); err != nil {
		return fmt.Errorf("match: %w", err)
	}
	actions := 0
	for _, set := range []bool{len(r.Backends) > 0, r.Redirect != nil, r.DirectResponse != nil} {
		if set {
			actions++
		}
	}
	switch {
	case actions > 1:
		return errors.New("set only one of backends, a redirect, a direct response")
	case actions == 0:
		return errors.New("no backend with a weight above zero")
	}
	if err := r.Redirect.validate(r.Match.PathKind); err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	if err := r.DirectResponse.validate(); err != nil {
		return fmt.Errorf("direct response: %w", err)
	}
	for _, b := range r.Backends {
		if b.Cluster == "" || b.Weight == 0 {
			return fmt.Errorf("backend %q: a cluster and a non-zero weight are required", b.Cluster)
		}
	}
	if r.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	if r.Retry != nil && r.Retry.MaxInterval > 0 && r.Retry.BaseInterval > r.Retry.MaxInterval {
		return errors.New("retry base interval exceeds the max interval")
	}
	if r.PrefixRewrite != "" && r.RegexRewrite != nil {
		return errors.New("set a prefix or a regex rewrite, not both")
	}
	if r.PrefixRewrite != "" && r.Match.PathKind != PathPrefix {
		return errors.New("a prefix rewrite needs a prefix match (path_pattern ending in /* or path_prefix)")
	}
	for _, h := range append(append([]HeaderValue{}, r.RequestHeaders.Add...), r.ResponseHeaders.Add...) {
		if h.Name == "" || strings.HasPrefix(h.Name, ":") {
			return fmt.Errorf("header %q cannot be added", h.Name)
		}
	}
	if r.Sticky != nil && r.Sticky.Cookie == "" {
		return errors.New("sticky session needs a cookie name")
	}
	if err := r.Authz.Validate(r.RouteID); err != nil {
		return err
	}
	if e := CheckRouteRateLimits(r.RateLimits); e != nil {
		return RouteRateLimitsError(e)
	}
	for i, rl := range r.RateLimits {
		if err := rl.Validate(); err != nil {
			return fmt.Errorf("rate_limits[%d]: %w", i, err)
		}
	}
	return nil
}

// Validate checks the match.
func (m *Match) Validate() error {
	switch m.PathKind {
	case PathExact, PathPrefix:
		if !strings.HasPrefix(m.Path, "/") {
			return fmt.Errorf("path %q must start with '/'", m.Path)
		}
	case PathRegex:
		if m.Path == "" {
			return errors.New("empty path regex")
		}
	default:
		return fmt.Errorf("unknown path kind %q", m.PathKind)
	}
	if !sort.StringsAreSorted(m.Methods) {
		return errors.New("methods must be sorted")
	}
	for _, s := range append(append([]StringMatch{}, m.Headers...), m.Query...) {
		if s.Name == "" {
			return errors.New("a header or query match needs a name")
		}
		switch s.Kind {
		case MatchExact, MatchPrefix, MatchRegex:
			if s.Value == "" && s.Kind != MatchExact {
				return fmt.Errorf("%s match on %q needs a value", s.Kind, s.Name)
			}
		case MatchPresent:
		default:
			return fmt.Errorf("unknown match kind %q", s.Kind)
		}
	}
	return nil
}

// Validate checks one cluster.
func (c *Cluster) Validate() error {
	if c.Name == "" {
		return errors.New("name is required")
	}
	switch c.Discovery {
	case DiscoveryEDS:
	case DiscoveryDNS:
		if len(c.Endpoints) == 0 {
			return errors.New("a DNS cluster needs an endpoint")
		}
	default:
		return fmt.Errorf("unknown discovery %q", c.Discovery)
	}
	switch c.LB {
	case LBRoundRobin, LBLeastRequest, LBRingHash, LBRandom:
	default:
		return fmt.Errorf("unknown load balancer %q", c.LB)
	}
	for _, e := range c.Endpoints {
		if e.Host == "" || e.Port == 0 || e.Port > 65535 || e.Weight == 0 {
			return fmt.Errorf("endpoint %s:%d: host, port and a non-zero weight are required", e.Host, e.Port)
		}
		if c.Discovery == DiscoveryEDS && net.ParseIP(e.Host) == nil {
			return fmt.Errorf("endpoint %q: EDS endpoints must be IP addresses", e.Host)
		}
	}
	if h := c.HealthCheck; h != nil && (!strings.HasPrefix(h.Path, "/") || h.Interval <= 0 || h.Timeout <= 0) {
		return errors.New("health check needs a path, an interval and a timeout")
	}
	if o := c.Outlier; o != nil && o.MaxEjectionPercent > 100 {
		return errors.New("max ejection percent must be 0-100")
	}
	return c.validateTLS()
}

// validateTLS: verification settings only with TLS; verification needs a trust anchor
// (Envoy refuses a name check without one); no empty or mistyped SAN.
func (c *Cluster) validateTLS() error {
	verifies := c.TrustedCAPEM != "" || c.TrustedCAFile != "" || len(c.SANs) > 0 || c.AutoHostSNI
	switch {
	case !c.TLS && (verifies || c.SkipVerify || c.SNI != ""):
		return errors.New("upstream TLS settings without TLS")
	case c.SkipVerify && verifies:
		return errors.New("upstream TLS verification settings with verification skipped")
	case c.TLS && !c.SkipVerify && c.TrustedCAPEM == "" && c.TrustedCAFile == "":
		return errors.New("upstream TLS without a trusted CA (set skip verify to accept any certificate)")
	case c.AutoHostSNI && (c.SNI != "" || len(c.SANs) > 0):
		return errors.New("upstream TLS: auto host SNI with an SNI or SANs of its own")
	}
	for _, s := range c.SANs {
		switch {
		case s.Value == "" || strings.ContainsRune(s.Value, 0):
			return fmt.Errorf("upstream TLS SAN %q: empty or holds NUL", s.Value)
		case s.Kind == SANIP && net.ParseIP(s.Value) == nil:
			return fmt.Errorf("upstream TLS SAN %q: not an IP address", s.Value)
		case s.Kind != SANIP && s.Kind != SANDNS:
			return fmt.Errorf("upstream TLS SAN %q: unknown kind %q", s.Value, s.Kind)
		}
	}
	return nil
}

func (rd *Redirect) validate(kind PathKind) error {
	if rd == nil {
		return nil
	}
	switch rd.Status {
	case 301, 302, 303, 307, 308:
	default:
		return fmt.Errorf("status %d is not a redirect status (301, 302, 303, 307, 308)", rd.Status)
	}
	if rd.Path != "" && rd.PrefixRewrite != "" {
		return errors.New("set a path or a prefix rewrite, not both")
	}
	if rd.PrefixRewrite != "" && kind != PathPrefix {
		return errors.New("a prefix rewrite needs a prefix match")
	}
	if !rd.HTTPS && rd.Host == "" && rd.Path == "" && rd.PrefixRewrite == "" {
		return errors.New("a redirect to the same URL")
	}
	for _, v := range []string{rd.Host, rd.Path, rd.PrefixRewrite} {
		if strings.ContainsAny(v, "\x00\r\n") {
			return fmt.Errorf("%q: a header value cannot hold NUL, CR or LF", v)
		}
	}
	return nil
}

func (d *DirectResponse) validate() error {
	if d == nil {
		return nil
	}
	if d.Status < 200 || d.Status > 599 {
		return fmt.Errorf("status %d is outside 200-599", d.Status)
	}
	if len(d.Body) > MaxDirectResponseBody {
		return fmt.Errorf("a body of %d bytes is above %d", len(d.Body), MaxDirectResponseBody)
	}
	if strings.ContainsAny(d.ContentType, "\x00\r\n") {
		return errors.New("a content type cannot hold NUL, CR or LF")
	}
	return nil
}

// MaxDirectResponseBody is Envoy's default RouteConfiguration.max_direct_response_body_size_bytes
// (source/common/router/config_impl.cc DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES): the
// gateway leaves that field unset, so a larger body would fail the whole route configuration.
const MaxDirectResponseBody = 4096
