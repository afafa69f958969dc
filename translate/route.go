package translate

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// routePart is the memoized part of a route's translation: everything but its clusters
// (which hold the instances of the services it targets: a heartbeat changes those only).
type routePart struct {
	key         string
	validateErr error
	condErr     error
	routes      []*ir.Route
	auth        *ir.RouteAuthz
}

// clusterPart is a route's memoized clusters: they read the route and the serving instances
// of the services it targets (key: their revisions), nothing else.
type clusterPart struct {
	key      string
	clusters []*ir.Cluster
	err      error
}

// translateRoute turns one model route into its Envoy routes (one per condition) and the
// clusters of its targets.
func translateRoute(r *model.Route, idx *index, in *inputs) ([]*ir.Route, []*ir.Cluster, error) {
	part := translateRoutePart(r, in)
	return finishRoute(part, func() ([]*ir.Cluster, error) {
		clusters, _, err := routeClusters(r, idx)
		return clusters, err
	})
}

// finishRoute adds the clusters to a route part; the errors come in the order a whole
// translation meets them: the route's own checks, its targets, its conditions.
func finishRoute(part *routePart, clustersOf func() ([]*ir.Cluster, error)) ([]*ir.Route, []*ir.Cluster, error) {
	if part.validateErr != nil {
		return nil, nil, part.validateErr
	}
	clusters, err := clustersOf()
	if err != nil {
		return nil, nil, err
	}
	if part.condErr != nil {
		return nil, nil, part.condErr
	}
	return part.routes, clusters, nil
}

// forwards reports whether a route forwards requests to targets (not a redirect or a direct
// response, which Envoy answers itself: no clusters, no upstream headers).
func forwards(r *model.Route) bool { return r.Redirect == nil && r.DirectResponse == nil }

// routeBackends are the weighted clusters of a route's targets in rotation: one per group
// of targetGroups, named as targetGroups says, weighing groupWeights (routeClusters builds
// the same clusters and refuses a weight above 2^32-1, which is capped here so that the
// route itself stays valid until routeClusters reports it).
func routeBackends(r *model.Route) []ir.Backend {
	groups := targetGroups(r)
	weights := groupWeights(r, groups)
	var backends []ir.Backend
	for gi, g := range groups {
		backends = append(backends, ir.Backend{Cluster: ClusterName(r.ID, g.name), Weight: uint32(min(weights[gi], math.MaxUint32))})
	}
	return backends
}

// translateRoutePart translates everything of a route but its clusters. It reads the route
// and in, nothing else: its memo key (inputs.routeKey) names every input it reads.
func translateRoutePart(r *model.Route, in *inputs) *routePart {
	part := &routePart{}
	if errs := r.Validate(); len(errs) > 0 {
		part.validateErr = fmt.Errorf("invalid route: %s", errs.Error())
		return part
	}
	tmpl := ir.Route{
		RouteID:      r.ID,
		Tenant:       r.Tenant,
		Backends:     routeBackends(r),
		HashSourceIP: r.LoadBalance == "ip_hash",
		Timeout:      r.Timeout.D(),
		Retry:        retry(r),
		Authz:        in.authz(r),
		RateLimits:   RouteRateLimits(r, in.snap),
		OwnChecks:    in.ownChecks(r),
		Mirror:       mirror(r),
		Fault:        fault(r.Fault),
	}
	part.auth = in.routeAuthz(r)
	if rd := r.Redirect; rd != nil {
		status := uint32(301)
		if rd.Status != 0 {
			status = uint32(rd.Status)
		}
		tmpl.Redirect = &ir.Redirect{HTTPS: rd.HTTPS, Host: rd.Host, Path: rd.Path, PrefixRewrite: rd.Prefix, Status: status}
	}
	if d := r.DirectResponse; d != nil {
		tmpl.DirectResponse = &ir.DirectResponse{Status: uint32(d.Status), Body: d.Body, ContentType: d.ContentType}
	}
	if rw := r.Rewrite; rw != nil {
		tmpl.PrefixRewrite = rw.Prefix
		if rw.Regex != "" {
			tmpl.RegexRewrite = &ir.RegexRewrite{Pattern: rw.Regex, Substitution: rw.Substitution}
		}
		tmpl.HostRewrite = rw.Host
	}
	tmpl.RequestHeaders = headerOps(r.RequestHeaders)
	if !tmpl.Authz.Enabled && forwards(r) {
		// Without ext_authz nothing overwrites the identity headers upstreams trust: a client
		// must not be able to send its own x-user-id.
		tmpl.RequestHeaders.Remove = mergeSorted(tmpl.RequestHeaders.Remove, in.routeIdentityHeaders(r))
	}
	tmpl.ResponseHeaders = headerOps(r.ResponseHeaders)
	if s := r.StickySession; s != nil {
		tmpl.Sticky = &ir.Sticky{Cookie: s.Cookie, TTL: s.TTL.D(), Path: s.Path}
		if tmpl.Sticky.Cookie == "" {
			tmpl.Sticky.Cookie = "agw-session"
		}
		if tmpl.Sticky.Path == "" {
			tmpl.Sticky.Path = "/"
		}
	}
	// The rate-limit caps are the route's, not a condition's: checked once, before the
	// conditions, and worded at the route's rate_limits (the rate-limit consumer's check
	// reports the same problem at the model's field for a write).
	if e := ir.CheckRouteRateLimits(tmpl.RateLimits); e != nil {
		part.condErr = ir.RouteRateLimitsError(e)
		return part
	}
	routes := make([]*ir.Route, 0, len(r.Conditions))
	for i := range r.Conditions {
		m, err := MatchOf(&r.Conditions[i])
		if err != nil {
			part.condErr = fmt.Errorf("conditions[%d]: %w", i, err)
			return part
		}
		rt := tmpl
		rt.Match = m
		rt.Name = r.ID
		if i > 0 {
			rt.Name = fmt.Sprintf("%s/%d", r.ID, i)
		}
		if len(rt.Backends) > 0 || !forwards(r) { // no backends: routeClusters reports it first
			if err := rt.Validate(); err != nil {
				part.condErr = fmt.Errorf("conditions[%d]: %w", i, err)
				return part
			}
		}
		routes = append(routes, &rt)
	}
	part.routes = routes
	return part
}

// perMillion is a validated percent (nil: 100) as a count per million.
func perMillion(p *float64) uint32 {
	return uint32(math.Round(model.PercentOrAll(p) * model.PercentScale))
}

// mirror is the route's mirror policy: the mirror target's own cluster, or the registered
// service's (a service not registered when Envoy mirrors: Envoy skips the copy).
func mirror(r *model.Route) *ir.Mirror {
	m := r.Mirror
	if m == nil {
		return nil
	}
	c := MirrorClusterName(r.ID)
	if m.Target == nil {
		c = ServiceClusterName(m.Service)
	}
	return &ir.Mirror{Cluster: c, PerMillion: perMillion(m.Percent)}
}

func fault(f *model.Fault) *ir.Fault {
	if f == nil {
		return nil
	}
	out := &ir.Fault{}
	if d := f.Delay; d != nil {
		out.Delay, out.DelayPerMillion = d.Fixed.D(), perMillion(d.Percent)
	}
	if a := f.Abort; a != nil {
		out.AbortHTTP, out.AbortPerMillion = uint32(a.Status), perMillion(a.Percent)
		if a.GRPCStatus != nil {
			out.AbortGRPC = uint32(*a.GRPCStatus)
		}
	}
	return out
}

// MatchOf converts one condition.
func MatchOf(c *model.Condition) (ir.Match, error) {
	var m ir.Match
	switch {
	case c.PathPattern != "":
		pattern, err := normalizedMatchPath(c.PathPattern)
		if err != nil {
			return m, fmt.Errorf("path_pattern: %w", err)
		}
		pm, err := model.ParsePathPattern(pattern)
		if err != nil {
			return m, fmt.Errorf("path_pattern: %w", err)
		}
		switch pm.Kind {
		case model.PathExact:
			m.PathKind, m.Path = ir.PathExact, pm.Value
		case model.PathPrefix:
			m.PathKind, m.Path = ir.PathPrefix, pm.Value
		default:
			m.PathKind, m.Path = ir.PathRegex, pm.Regex
		}
	case c.PathPrefix != "":
		prefix, err := normalizedMatchPath(c.PathPrefix)
		if err != nil {
			return m, fmt.Errorf("path_prefix: %w", err)
		}
		m.PathKind, m.Path = ir.PathPrefix, prefix
	case c.PathRegex != "":
		m.PathKind, m.Path = ir.PathRegex, c.PathRegex
	default:
		m.PathKind, m.Path = ir.PathPrefix, "/"
	}
	seen := map[string]bool{}
	for _, meth := range append([]string{c.Method}, c.Methods...) {
		meth = strings.ToUpper(meth)
		if meth != "" && !seen[meth] {
			seen[meth] = true
			m.Methods = append(m.Methods, meth)
		}
	}
	sort.Strings(m.Methods)
	for _, h := range c.Headers {
		m.Headers = append(m.Headers, stringMatch(strings.ToLower(h.Name), h.Exact, h.Prefix, h.Regex, h.Present, h.Invert))
	}
	for _, q := range c.Query {
		if q.Present != nil && !*q.Present {
			return m, fmt.Errorf("query %q: present false (absent) cannot be matched by Envoy", q.Name)
		}
		m.Query = append(m.Query, stringMatch(q.Name, q.Exact, q.Prefix, q.Regex, q.Present, false))
	}
	sortMatches(m.Headers)
	sortMatches(m.Query)
	return m, m.Validate()
}

// normalizedMatchPath spells a configured path (a prefix, an exact path, a path_pattern)
// the way Envoy's path normalization leaves every request path before the route is chosen
// (envoy/listener.go normalizePaths): %2F and %5C unescaped (a request with them is
// redirected to its unescaped path), escapes of unreserved characters decoded (%7E -> ~),
// other escapes with upper-case hex, backslashes as slashes, runs of slashes as one. A path
// spelled otherwise would never match a request. A dot segment ("." or "..", escaped or
// not) cannot be respelled, since Envoy removes them from requests: such a path is refused.
// Regex paths are left as written.
func normalizedMatchPath(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\':
			b.WriteByte('/')
		case c == '%' && i+2 < len(p) && isHexDigit(p[i+1]) && isHexDigit(p[i+2]):
			switch d := unhex(p[i+1])<<4 | unhex(p[i+2]); {
			case d == '/' || d == '\\':
				b.WriteByte('/')
			case isUnreservedByte(d):
				b.WriteByte(d)
			default:
				b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
			}
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	out := b.String()
	for strings.Contains(out, "//") { // merge_slashes
		out = strings.ReplaceAll(out, "//", "/")
	}
	for seg := range strings.SplitSeq(out, "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("%q has a dot segment: Envoy removes them from request paths (normalize_path), so it would never match", p)
		}
	}
	return out, nil
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// isUnreservedByte: RFC 3986 unreserved (ALPHA / DIGIT / "-" / "." / "_" / "~").
func isUnreservedByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func stringMatch(name, exact, prefix, re string, present *bool, invert bool) ir.StringMatch {
	s := ir.StringMatch{Name: name, Invert: invert}
	switch {
	case present != nil:
		s.Kind, s.Absent = ir.MatchPresent, !*present
	case prefix != "":
		s.Kind, s.Value = ir.MatchPrefix, prefix
	case re != "":
		s.Kind, s.Value = ir.MatchRegex, re
	default:
		s.Kind, s.Value = ir.MatchExact, exact
	}
	return s
}

func sortMatches(ms []ir.StringMatch) {
	sort.SliceStable(ms, func(i, j int) bool {
		if ms[i].Name != ms[j].Name {
			return ms[i].Name < ms[j].Name
		}
		return ms[i].Kind+ir.StringMatchKind(ms[i].Value) < ms[j].Kind+ir.StringMatchKind(ms[j].Value)
	})
}

// MatchKey is a canonical string of a match: two routes with the same key on the same host
// conflict.
func MatchKey(m ir.Match) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%s|%s", m.PathKind, m.Path, strings.Join(m.Methods, ","))
	for _, h := range m.Headers {
		fmt.Fprintf(&b, "|h:%s:%s:%q:%t:%t", h.Name, h.Kind, h.Value, h.Absent, h.Invert)
	}
	for _, q := range m.Query {
		fmt.Fprintf(&b, "|q:%s:%s:%q:%t", q.Name, q.Kind, q.Value, q.Absent)
	}
	return b.String()
}

// SortRoutes orders routes most specific first: exact paths, then regexes (templates), then
// prefixes (longest first); then routes with more method/header/query constraints; then by
// name. The order is total, so output is deterministic.
func SortRoutes(rs []*ir.Route) {
	rank := func(k ir.PathKind) int {
		switch k {
		case ir.PathExact:
			return 0
		case ir.PathRegex:
			return 1
		}
		return 2
	}
	constraints := func(m *ir.Match) int {
		n := len(m.Headers) + len(m.Query)
		if len(m.Methods) > 0 {
			n++
		}
		return n
	}
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := &rs[i].Match, &rs[j].Match
		if ra, rb := rank(a.PathKind), rank(b.PathKind); ra != rb {
			return ra < rb
		}
		if a.PathKind != ir.PathExact && len(a.Path) != len(b.Path) {
			return len(a.Path) > len(b.Path)
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if ca, cb := constraints(a), constraints(b); ca != cb {
			return ca > cb
		}
		return rs[i].Name < rs[j].Name
	})
}

// defaultRetryOn are the retry conditions of a route that names none; defaultGRPCRetryOn
// those of a gRPC route (a target with protocol grpc). A gRPC error is an HTTP 200 with a
// grpc-status, which no HTTP condition covers, and proxyless gRPC clients read only the gRPC
// statuses of retry_on: "unavailable" is the status gRPC defines as transient, safe to retry
// (the others Envoy names, cancelled, deadline-exceeded, internal and resource-exhausted, may
// follow work the server did, or add load to an exhausted one).
var (
	defaultRetryOn     = []string{"5xx", "reset", "connect-failure"}
	defaultGRPCRetryOn = []string{"5xx", "reset", "connect-failure", "unavailable"}
)

// grpcTargets reports whether a route has a target with protocol grpc (read from the route
// alone: a service target's instances are the clusters' input, not the route part's).
func grpcTargets(r *model.Route) bool {
	for i := range r.Targets {
		if r.Targets[i].Protocol == "grpc" {
			return true
		}
	}
	return false
}

func retry(r *model.Route) *ir.Retry {
	if r.Retries <= 0 {
		return nil
	}
	on := defaultRetryOn
	if grpcTargets(r) {
		on = defaultGRPCRetryOn
	}
	rt := &ir.Retry{NumRetries: uint32(r.Retries), RetryOn: append([]string(nil), on...), DefaultRetryOn: true}
	if p := r.RetryPolicy; p != nil {
		if len(p.RetryOn) > 0 {
			rt.RetryOn, rt.DefaultRetryOn = append([]string(nil), p.RetryOn...), false
		}
		rt.PerTryTimeout, rt.BaseInterval, rt.MaxInterval = p.PerTryTimeout.D(), p.BaseInterval.D(), p.MaxInterval.D()
		for _, c := range p.RetriableCode {
			rt.RetriableStatusCodes = append(rt.RetriableStatusCodes, uint32(c))
		}
		if len(rt.RetriableStatusCodes) > 0 && !containsStr(rt.RetryOn, "retriable-status-codes") {
			rt.RetryOn = append(rt.RetryOn, "retriable-status-codes")
		}
	}
	return rt
}

func headerOps(h *model.HeaderOps) ir.HeaderOps {
	var ops ir.HeaderOps
	if h == nil {
		return ops
	}
	for k, v := range h.Add {
		ops.Add = append(ops.Add, ir.HeaderValue{Name: strings.ToLower(k), Value: v, Append: true})
	}
	for k, v := range h.Set {
		ops.Add = append(ops.Add, ir.HeaderValue{Name: strings.ToLower(k), Value: v})
	}
	sort.Slice(ops.Add, func(i, j int) bool {
		if ops.Add[i].Name != ops.Add[j].Name {
			return ops.Add[i].Name < ops.Add[j].Name
		}
		return ops.Add[i].Append && !ops.Add[j].Append
	})
	for _, k := range h.Remove {
		ops.Remove = append(ops.Remove, strings.ToLower(k))
	}
	sort.Strings(ops.Remove)
	return ops
}

// NeedsAuthz reports whether ext_authz must see the route's requests: a credential is
// required, or a WAF, geoblocking, an IP rule in force at now, a policy or a tenant rule
// applies to it.
func NeedsAuthz(r *model.Route, snap *model.Snapshot, now time.Time) bool {
	return newInputs(snap, now).needsAuthz(r)
}

func (in *inputs) authz(r *model.Route) ir.Authz {
	if !in.needsAuthz(r) {
		return ir.Authz{}
	}
	a := ir.Authz{Enabled: true, ContextExtensions: map[string]string{ir.ExtAuthzRouteIDKey: r.ID}}
	if r.Tenant != "" {
		a.ContextExtensions[ir.ExtAuthzTenantKey] = r.Tenant
	}
	if w := in.effectiveWAF(r); w.IsEnabled() {
		// Envoy buffers exactly what the WAF inspects: the whole body up to the WAF's own
		// max_request_body_size, and refuses a larger one with 413 (allow_partial_message
		// false, envoy/httpfilters.go). A smaller buffer would hand the WAF a cut body: an
		// attack past the cut unseen, a valid JSON or multipart body unparseable.
		a.WithBody = true
		a.MaxBodyBytes = uint32(min(int64(model.DefaultWAFMaxRequestBodySize), math.MaxUint32))
		if w.MaxRequestBodySize > 0 {
			a.MaxBodyBytes = uint32(min(w.MaxRequestBodySize, math.MaxUint32))
		}
		// Reading the body costs time in proportion to its size (a 128 KiB form at paranoia
		// 2 is ~1.7 s of CPU): the check gets the WAF's own timeout, not the 2 s default.
		a.Timeout = model.DefaultWAFCheckTimeout
		if w.CheckTimeout > 0 {
			a.Timeout = w.CheckTimeout.D()
		}
	}
	return a
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// IdentityHeaders lists, sorted and lowercase, the headers that carry a verified identity to
// upstreams on this route: the identity headers and the targets of claims_to_headers.
func IdentityHeaders(r *model.Route, snap *model.Snapshot) []string {
	in := &inputs{auth: &model.AuthSettings{}}
	if snap.Settings != nil && snap.Settings.Auth != nil {
		in.auth = snap.Settings.Auth
	}
	return in.routeIdentityHeaders(r)
}

func (in *inputs) routeIdentityHeaders(r *model.Route) []string {
	names := in.identityHeaders().Names()
	if r.Auth != nil {
		for _, h := range r.Auth.ClaimsToHeaders {
			names = append(names, strings.ToLower(h))
		}
	}
	return mergeSorted(nil, names)
}

// mergeSorted returns the sorted union of a and b without duplicates.
func mergeSorted(a, b []string) []string {
	set := make(map[string]struct{}, len(a)+len(b))
	for _, s := range append(append([]string(nil), a...), b...) {
		set[s] = struct{}{}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
