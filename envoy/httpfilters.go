package envoy

import (
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	statefulv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/type/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/api-gateway/api-gateway/ir"
)

// HTTP filter names (also the keys of typed_per_filter_config).
const (
	ExtAuthzFilter  = "envoy.filters.http.ext_authz"
	RateLimitFilter = "envoy.filters.http.ratelimit"
	StatefulFilter  = "envoy.filters.http.stateful_session"
	FaultFilter     = "envoy.filters.http.fault"
	cookieStateName = "envoy.http.stateful_session.cookie"
)

// authzTimeout bounds one ext_authz Check (on routes whose checks read no body) and one
// ShouldRateLimit call. A route with its own Check timeout (WAF routes: the WAF's
// check_timeout) carries it in its per-route check settings (perFilterConfig).
const authzTimeout = ir.DefaultAuthzTimeout

// httpFilter is one entry of the filter table.
type httpFilter struct {
	name string
	// on decides whether the filter is in the chain.
	on func(b *builder, sticky bool) bool
	// config is the listener-level config.
	config func(b *builder) proto.Message
}

// filterTable is the HTTP filter chain, in order. ext_authz runs first (it decides and sets
// the identity metadata the rate-limit actions read), then rate limiting, then the sticky
// session cookie (which picks the upstream host), then fault injection, then the router.
// Faults come after ext_authz and rate limiting: a caller without credentials gets its 401
// and an over-limit one its 429, not an injected 503 or delay, and an injected delay holds
// no authorization or rate-limit call open; faults test how clients and upstreams fare
// with a slow or failing route, which is what the router then sees.
var filterTable = []httpFilter{
	{ExtAuthzFilter, func(*builder, bool) bool { return true }, (*builder).extAuthzConfig},
	{RateLimitFilter, func(*builder, bool) bool { return true }, (*builder).rateLimitConfig},
	{StatefulFilter, func(_ *builder, sticky bool) bool { return sticky }, func(*builder) proto.Message {
		// No session state at the listener: the filter is off unless a route turns it on.
		return &statefulv3.StatefulSession{}
	}},
	{FaultFilter, func(b *builder, _ bool) bool { return hasFault(b.cfg) }, func(*builder) proto.Message {
		// No fault at the listener: only the routes' own (typed_per_filter_config, which
		// replaces this config for the route) inject. Header-driven faults
		// (x-envoy-fault-*) stay off: they need header_abort/header_delay here.
		return &faultv3.HTTPFault{}
	}},
	{routerFilter, func(*builder, bool) bool { return true }, func(*builder) proto.Message { return &routerv3.Router{} }},
}

// hasFault: a route of the configuration injects faults (the fault filter is in the chain
// only then, as Envoy Gateway adds it). A route left out as bad still counts: the filter
// with no fault of its own injects nothing.
func hasFault(cfg *ir.Config) bool {
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.Fault != nil {
				return true
			}
		}
	}
	return false
}

// faultConfig is a route's HTTPFault (both flavors: grpc-go and grpc-js apply it). Every
// percentage is set (grpc-js NACKs a delay or abort without one) and counted per million.
func faultConfig(f *ir.Fault) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if f.Delay > 0 {
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: dur(f.Delay)},
			Percentage:         perMillion(f.DelayPerMillion),
		}
	}
	switch {
	case f.AbortGRPC != 0:
		out.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: f.AbortGRPC}, Percentage: perMillion(f.AbortPerMillion)}
	case f.AbortHTTP != 0:
		out.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: f.AbortHTTP}, Percentage: perMillion(f.AbortPerMillion)}
	}
	return out
}

// perMillion is a share of requests as a FractionalPercent (per million: percents with up
// to 4 decimals are exact; Envoy, grpc-go and grpc-js all read MILLION).
func perMillion(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_MILLION}
}

func (b *builder) httpFilters(sticky bool) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, f := range filterTable {
		if !f.on(b, sticky) {
			continue
		}
		out = append(out, &hcmv3.HttpFilter{Name: f.name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.pack(f.config(b))}})
	}
	return out
}

func (b *builder) extAuthzConfig() proto.Message {
	return &extauthzv3.ExtAuthz{
		Services:            &extauthzv3.ExtAuthz_GrpcService{GrpcService: envoyGRPC(ir.ControlPlaneCluster, authzTimeout)},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    false,
		StatusOnError:       &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		// Reject header mutations with invalid names or values (a second line of defence
		// behind the Check service's own checks).
		ValidateMutations: true,
	}
}

func (b *builder) rateLimitConfig() proto.Message {
	return &ratelimitv3.RateLimit{
		Domain:          ir.RateLimitDomainName,
		Timeout:         dur(authzTimeout),
		FailureModeDeny: false,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService:         envoyGRPC(ir.ControlPlaneCluster, 0),
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		EnableXRatelimitHeaders: ratelimitv3.RateLimit_DRAFT_VERSION_03,
	}
}

// authzDisabledConfig is the ext_authz per-route config turning the filter off (never
// changed), and authzDisabled the Any holding it, packed once.
var authzDisabledConfig = &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}

var authzDisabled = sync.OnceValues(func() (*anypb.Any, error) {
	b := &builder{}
	a := b.pack(authzDisabledConfig)
	return a, b.err
})

// perFilterConfig is the route's typed_per_filter_config (Envoy flavor only).
func (b *builder) perFilterConfig(r *ir.Route) map[string]*anypb.Any {
	out := map[string]*anypb.Any{}
	if !r.Authz.Enabled {
		// The same for every such route: packed and validated once, shared (resources are
		// never mutated after they are built).
		a, err := authzDisabled()
		b.fail(err)
		out[ExtAuthzFilter] = a
	} else {
		out[ExtAuthzFilter] = b.pack(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: checkSettings(&r.Authz)}})
	}
	if f := r.Fault; f != nil {
		out[FaultFilter] = b.pack(faultConfig(f))
	}
	if s := r.Sticky; s != nil {
		cookie := &httpv3.Cookie{Name: s.Cookie, Path: s.Path, Ttl: dur(s.TTL)}
		if s.TTL <= 0 {
			cookie.Ttl = nil
		}
		state := &corev3.TypedExtensionConfig{Name: cookieStateName, TypedConfig: b.pack(&cookiev3.CookieBasedSessionState{Cookie: cookie})}
		out[StatefulFilter] = b.pack(&statefulv3.StatefulSessionPerRoute{Override: &statefulv3.StatefulSessionPerRoute_StatefulSession{
			StatefulSession: &statefulv3.StatefulSession{SessionState: state},
		}})
	}
	return out
}

// checkSettings is a route's ext_authz CheckSettings.
func checkSettings(a *ir.Authz) *extauthzv3.CheckSettings {
	cs := &extauthzv3.CheckSettings{ContextExtensions: a.ContextExtensions}
	if a.WithBody {
		// The whole body or nothing. With allow_partial_message false the ext_authz filter
		// raises the stream's decoder buffer limit to max_request_bytes
		// (setDecoderBufferLimit in source/extensions/filters/http/ext_authz/ext_authz.cc,
		// decodeHeaders), so the listener's per_connection_buffer_limit_bytes (1 MiB) does
		// not cap it, and a body over the limit gets Envoy's own 413 before any Check is
		// made. With allow_partial_message true Envoy would send the first max_request_bytes
		// and mark the request x-envoy-auth-partial-body: true
		// (source/extensions/filters/common/ext_authz/check_request_utils.cc): the WAF would
		// judge a body it has not seen whole. The per-route with_request_body replaces the
		// filter's (none) since Envoy 1.29 (envoyproxy/envoy#30571).
		cs.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: a.MaxBodyBytes, AllowPartialMessage: false, PackAsBytes: true}
	}
	if a.Timeout > 0 && a.Timeout != authzTimeout {
		// Envoy's ext_authz timeout is the filter's grpc_service timeout; a route that needs
		// another one overrides the service per route (CheckSettings.grpc_service, Envoy
		// 1.36+: createPerRouteGrpcClient in ext_authz.cc builds the client with this
		// timeout, and Envoy sends it to the Check server as the gRPC deadline, which the WAF
		// honors). The same cluster: only the deadline differs. One filter for every route
		// rather than one filter instance per timeout: a route naming a filter instance that
		// a draining listener does not have would run with no ext_authz at all.
		cs.ServiceOverride = &extauthzv3.CheckSettings_GrpcService{GrpcService: envoyGRPC(ir.ControlPlaneCluster, a.Timeout)}
	}
	return cs
}
