package envoy

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
)

// grpcChannelIDKey is grpc-go's filter-state hash key (a stable per-channel hash: the
// proxyless equivalent of hashing the source IP).
const grpcChannelIDKey = "io.grpc.channel_id"

// routeConfig assembles the virtual hosts from the built routes, skipping dropped ones, and
// returns each virtual host's content hash (from its routes' hashes).
func (b *builder) routeConfig(name string, routes map[*ir.Route]builtRoute, bad map[string]bool, grpc bool) (*routev3.RouteConfiguration, map[*routev3.VirtualHost]uint64) {
	rc := &routev3.RouteConfiguration{Name: name, VirtualHosts: make([]*routev3.VirtualHost, 0, len(b.cfg.VirtualHosts))}
	hashes := make(map[*routev3.VirtualHost]uint64, len(b.cfg.VirtualHosts))
	domains := map[string]bool{}
	for _, vh := range b.cfg.VirtualHosts {
		v := &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains, Routes: make([]*routev3.Route, 0, len(vh.Routes))}
		h := keyOf(b.h, kindVirtualHost, b.o.Flavor)
		h.Str(vh.Name)
		h.Strs(vh.Domains)
		h.Bool(false) // routes follow
		for _, r := range vh.Routes {
			if er, ok := routes[r]; ok && !bad[r.RouteID] {
				v.Routes = append(v.Routes, er.r)
				h.U64(er.hash)
			}
		}
		hashes[v] = h.Sum64()
		for _, d := range vh.Domains {
			domains[d] = true
		}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	if grpc {
		// Registered services a route does not already name: xds:///name reaches the service.
		for _, s := range b.cfg.ServiceHosts {
			if domains[s.Name] || b.omittedClusters[s.Cluster] != "" {
				continue
			}
			v := &routev3.VirtualHost{Name: "service/" + s.Name, Domains: []string{s.Name}, Routes: []*routev3.Route{{
				Name:  "service/" + s.Name,
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: s.Cluster},
				}},
			}}}
			if !strings.Contains(s.Name, ":") {
				v.Domains = append(v.Domains, s.Name+":*")
			}
			h := keyOf(b.h, kindVirtualHost, b.o.Flavor)
			h.Str(v.Name)
			h.Strs(v.Domains)
			h.Bool(true) // a service's catch-all route
			h.Str(s.Cluster)
			hashes[v] = h.Sum64()
			rc.VirtualHosts = append(rc.VirtualHosts, v)
		}
		sort.Slice(rc.VirtualHosts, func(i, j int) bool { return rc.VirtualHosts[i].Name < rc.VirtualHosts[j].Name })
	}
	return rc, hashes
}

// grpcMaxBackOff is the longest retry interval grpc-js reads right: it validates intervals
// as a signed 32-bit count of milliseconds (route-config-resource-type.js durationToMs, "| 0"),
// so a longer one wraps negative and the whole route configuration is NACKed.
const grpcMaxBackOff = math.MaxInt32 * time.Millisecond

// grpcBackOff is a retry interval (0: unset) as proxyless clients take it: whole milliseconds
// (grpc-js truncates to milliseconds and NACKs a base interval of 0 ms), at least 1 ms and at
// most grpcMaxBackOff. Envoy reads whole milliseconds, rounded up to 1 ms, too.
func grpcBackOff(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	if d > grpcMaxBackOff {
		return grpcMaxBackOff
	}
	return max(d.Truncate(time.Millisecond), time.Millisecond)
}

// route builds one Envoy route.
func (b *builder) route(r *ir.Route) *routev3.Route {
	grpc := b.o.Flavor == FlavorGRPC
	ra := &routev3.RouteAction{
		Timeout:       dur(r.Timeout),
		PrefixRewrite: r.PrefixRewrite,
	}
	if grpc && r.Timeout > 0 {
		// Proxyless clients ignore RouteAction.timeout: grpc-go and grpc-js take the call's
		// timeout from max_stream_duration (grpc_timeout_header_max first when set, which we
		// leave unset) and apply the smaller of it and the call's own deadline. Envoy's
		// max_stream_duration would be another timer (from the stream's start, upgrades and
		// streaming included), so the Envoy flavor keeps only timeout.
		ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: dur(r.Timeout)}
	}
	if len(r.Backends) == 1 {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: r.Backends[0].Cluster}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, be := range r.Backends {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: be.Cluster, Weight: wrapperspb.UInt32(be.Weight)})
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if r.RegexRewrite != nil {
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: r.RegexRewrite.Pattern}, Substitution: r.RegexRewrite.Substitution}
	}
	if r.HostRewrite != "" {
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: r.HostRewrite}
	}
	if r.HashSourceIP {
		if grpc {
			ra.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
				FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: grpcChannelIDKey}}}}
		} else {
			ra.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
				ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}}
		}
	}
	if rt := r.Retry; rt != nil {
		on := rt.RetryOn
		if grpc && rt.DefaultRetryOn && !slices.Contains(on, "unavailable") {
			// Proxyless clients read only the gRPC statuses of retry_on, and every call of
			// theirs is gRPC whatever the targets' protocol: the default gets the one
			// transient status (a default of HTTP conditions alone would retry nothing).
			on = append(slices.Clip(on), "unavailable")
		}
		rp := &routev3.RetryPolicy{
			RetryOn:              strings.Join(on, ","),
			NumRetries:           wrapperspb.UInt32(rt.NumRetries),
			PerTryTimeout:        dur(rt.PerTryTimeout),
			RetriableStatusCodes: rt.RetriableStatusCodes,
		}
		if rt.BaseInterval > 0 || rt.MaxInterval > 0 {
			base := rt.BaseInterval
			if base <= 0 {
				base = min(rt.MaxInterval, defaultRetryBase)
			}
			maxInterval := rt.MaxInterval
			if grpc {
				base, maxInterval = grpcBackOff(base), grpcBackOff(maxInterval)
			}
			rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(base), MaxInterval: dur(maxInterval)}
		}
		ra.RetryPolicy = rp
	}
	if m := r.Mirror; m != nil && !grpc {
		// Proxyless clients do not mirror: the gRPC flavor leaves the policy out (its absence
		// only drops the shadow copies).
		ra.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
			Cluster:         m.Cluster,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: perMillion(m.PerMillion)},
		}}
	}
	if !grpc {
		for _, rl := range r.RateLimits {
			ra.RateLimits = append(ra.RateLimits, rateLimit(rl))
		}
	}
	er := &routev3.Route{
		Name:                    r.Name,
		Match:                   b.match(&r.Match),
		RequestHeadersToAdd:     headerValues(r.RequestHeaders.Add),
		RequestHeadersToRemove:  r.RequestHeaders.Remove,
		ResponseHeadersToAdd:    headerValues(r.ResponseHeaders.Add),
		ResponseHeadersToRemove: r.ResponseHeaders.Remove,
	}
	setRouteAction(er, r, ra)
	if d := r.DirectResponse; d != nil && d.ContentType != "" {
		er.ResponseHeadersToAdd = append(er.ResponseHeadersToAdd, &corev3.HeaderValueOption{
			// A header value is an Envoy format string: '%' is written "%%".
			Header:       &corev3.HeaderValue{Key: "content-type", Value: strings.ReplaceAll(d.ContentType, "%", "%%")},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	if !grpc {
		er.TypedPerFilterConfig = b.perFilterConfig(r)
	} else if r.Fault != nil {
		er.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilter: b.pack(faultConfig(r.Fault))}
	}
	return er
}

// setRouteAction sets the route's action: forwarding (ra), a redirect or a direct response. The
// filters (ext_authz, rate limits) run before the router answers either of the last two, so
// a route that requires a credential redirects only a caller that has one.
func setRouteAction(er *routev3.Route, r *ir.Route, ra *routev3.RouteAction) {
	switch {
	case r.Redirect != nil:
		rd := r.Redirect
		ea := &routev3.RedirectAction{HostRedirect: rd.Host, ResponseCode: redirectCodes[rd.Status]}
		if rd.HTTPS {
			ea.SchemeRewriteSpecifier = &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}
		}
		switch {
		case rd.Path != "":
			ea.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.Path}
		case rd.PrefixRewrite != "":
			ea.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.PrefixRewrite}
		}
		er.Action = &routev3.Route_Redirect{Redirect: ea}
	case r.DirectResponse != nil:
		d := r.DirectResponse
		da := &routev3.DirectResponseAction{Status: d.Status}
		if d.Body != "" {
			da.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: d.Body}}
		}
		er.Action = &routev3.Route_DirectResponse{DirectResponse: da}
	default:
		er.Action = &routev3.Route_Route{Route: ra}
	}
}

// redirectCodes maps a redirect status to Envoy's RedirectResponseCode (ir.Route.Validate
// admits these five only).
var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func (b *builder) match(m *ir.Match) *routev3.RouteMatch {
	grpc := b.o.Flavor == FlavorGRPC
	rm := &routev3.RouteMatch{}
	switch m.PathKind {
	case ir.PathExact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case ir.PathPrefix:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.Path}
	default:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: wholeRegex(m.Path, grpc)}}
	}
	switch len(m.Methods) {
	case 0:
	case 1:
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Methods[0]}}}})
	default:
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(m.Methods, "|")}}}}})
	}
	for _, h := range m.Headers {
		hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
		switch {
		case h.Kind == ir.MatchPresent && h.Absent && b.o.Flavor == FlavorGRPC:
			// grpc-js reads present_match as "present" whatever its value (matcher.js
			// PresentValueMatcher): "absent" is sent as an inverted "present", which Envoy,
			// grpc-go and grpc-js all read alike.
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
			hm.InvertMatch = !h.Invert
		case h.Kind == ir.MatchPresent:
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: !h.Absent}
		default:
			if grpc && h.Invert {
				// Envoy and grpc-go never match a value condition on a missing header,
				// inverted or not; grpc-js inverts its "missing: no match" into a match
				// (matcher.js HeaderMatcher). A "present" condition on the same header
				// first makes grpc-js agree (its present matcher fails on a missing one).
				rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: h.Name,
					HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})
			}
			sm := stringMatcher(h)
			if grpc && h.Kind == ir.MatchRegex {
				sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: wholeRegex(h.Value, true)}}
			}
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, q := range m.Query {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		if q.Kind == ir.MatchPresent {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatcher(q)}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm
}

// wholeRegex is a regex as the gRPC flavor sends it (grouped): Envoy and grpc-go match a
// safe_regex against the whole value ("^(?:R)$"), but grpc-js compiles "^R$" (matcher.js),
// so "a|b" would be "^a" or "b$" there, a prefix or a suffix match. Grouped, every client
// reads the same whole-value match. Without a "|" both anchorings agree, and the regex is
// sent as written (the reasons that quote it stay the operator's text).
func wholeRegex(re string, grpc bool) string {
	if !grpc || !strings.Contains(re, "|") {
		return re
	}
	return "(?:" + re + ")"
}

func stringMatcher(s ir.StringMatch) *matcherv3.StringMatcher {
	switch s.Kind {
	case ir.MatchPrefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s.Value}}
	case ir.MatchRegex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s.Value}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.Value}}
}

func headerValues(hs []ir.HeaderValue) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range hs {
		action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if h.Append {
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value}, AppendAction: action})
	}
	return out
}

// headersNotInMetadata are request headers a proxyless gRPC client matches a route
// condition against otherwise than Envoy sees them: its route matchers read the call's own
// metadata, and the transport sets these itself (grpc-go and grpc-js never put them in the
// metadata the matchers see), drops them from a call's metadata on the wire (grpc-go's
// isReservedHeader: grpc-status, grpc-message), or adds them to retried attempts only
// (grpc-previous-rpc-attempts, after the route was picked).
var headersNotInMetadata = map[string]bool{
	"user-agent": true, "te": true, "host": true, "grpc-timeout": true, "grpc-encoding": true,
	"grpc-accept-encoding": true, "grpc-message-type": true, "grpc-status": true, "grpc-message": true,
	"grpc-previous-rpc-attempts": true,
}

// conditionIndex is the index of the model condition an IR route was made from (its name is
// the route id for the first condition and "<id>/<n>" for the others).
func conditionIndex(r *ir.Route) int {
	rest, ok := strings.CutPrefix(r.Name, r.RouteID+"/")
	if !ok {
		return 0
	}
	n := 0
	for _, c := range rest {
		if c < '0' || c > '9' || n > 1<<20 {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// grpcRouteOmission is why the gRPC flavor leaves a route out ("" serves it): a feature a
// proxyless client cannot apply and whose absence would change which backend a call reaches
// or who may call it. Features whose absence only degrades the service (health checks,
// sticky sessions, header edits, per-try timeouts) do not omit a route: the README's xDS
// table lists what each client applies. A pure function of the IR route, so memoized
// builds agree with fresh ones.
func grpcRouteOmission(r *ir.Route) string {
	var why []string
	i := conditionIndex(r)
	switch len(r.Match.Methods) {
	case 0:
	case 1:
		why = append(why, fmt.Sprintf("conditions[%d].method: proxyless gRPC clients do not put :method in their metadata, so the route would never match", i))
	default:
		why = append(why, fmt.Sprintf("conditions[%d].methods: proxyless gRPC clients do not put :method in their metadata, so the route would never match", i))
	}
	if len(r.Match.Query) > 0 {
		// grpc-go skips a route with query matchers (unmarshal_rds.go), grpc-js drops the
		// matchers and matches every call (route.js): neither does what Envoy does.
		why = append(why, fmt.Sprintf("conditions[%d].query %q: grpc-js ignores query conditions (the route would match every call) and grpc-go skips the route", i, r.Match.Query[0].Name))
	}
	for _, h := range r.Match.Headers {
		if strings.HasSuffix(h.Name, "-bin") || headersNotInMetadata[h.Name] {
			why = append(why, fmt.Sprintf("conditions[%d].headers %q: proxyless gRPC clients match only the metadata a call carries, which never holds binary (-bin) headers or the ones their transport sets, so the route would match other calls than through Envoy", i, h.Name))
			break
		}
	}
	switch {
	case r.PrefixRewrite != "":
		why = append(why, "rewrite.prefix: proxyless gRPC clients do not rewrite the path, so calls would reach the method they name instead of the rewritten one")
	case r.RegexRewrite != nil:
		why = append(why, "rewrite.regex: proxyless gRPC clients do not rewrite the path, so calls would reach the method they name instead of the rewritten one")
	}
	if r.HostRewrite != "" {
		why = append(why, "rewrite.host: proxyless gRPC clients do not rewrite the authority, so the backend would see the name the client dialed")
	}
	switch {
	case r.Redirect != nil:
		why = append(why, "redirect: proxyless gRPC clients cannot follow a redirect (grpc-js refuses the whole route configuration with a redirect action, grpc-go fails the calls it matches)")
	case r.DirectResponse != nil:
		why = append(why, "direct_response: proxyless gRPC clients cannot answer a call themselves (grpc-js refuses the whole route configuration with a direct_response action, grpc-go fails the calls it matches)")
	}
	if len(r.OwnChecks) > 0 {
		// Only the route's own checks: edge-wide ones (a global IP rule such as a WAF ban, a
		// global policy, the settings' WAF or rate limits) cover every route, and leaving
		// every route out for them would take the whole routing table from proxyless
		// clients at the first ban. Those clients are mesh clients trusted with a client
		// certificate for the xDS port; Envoy enforces the edge-wide protections.
		why = append(why, strings.Join(r.OwnChecks, ", ")+": the route's own checks (ext_authz, rate limits) run in Envoy; a proxyless gRPC client calls the backend directly, so nothing would apply them to its calls")
	}
	return strings.Join(why, "; ")
}
