package envoy

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
)

// Extension names.
const (
	hcmName      = "envoy.filters.network.http_connection_manager"
	alsName      = "envoy.access_loggers.http_grpc"
	otelName     = "envoy.tracers.opentelemetry"
	routerFilter = "envoy.filters.http.router"
)

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// httpListener is Envoy's HTTP listener: one HCM with RDS over ADS, the HTTP filter chain,
// the access log to ALS and, with an OTLP collector, OpenTelemetry tracing.
func (b *builder) httpListener(sticky bool) *listenerv3.Listener {
	l := b.cfg.Listener
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: b.o.StatPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: EnvoyRouteConfigName,
		}},
		HttpFilters:      b.httpFilters(sticky),
		UseRemoteAddress: wrapperspb.Bool(true),
		AccessLog:        []*accesslogv3.AccessLog{b.accessLog()},
	}
	normalizePaths(h)
	if b.cfg.OTLP != nil {
		h.Tracing = &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{
			Name: otelName,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: b.pack(&tracev3.OpenTelemetryConfig{
				GrpcService: envoyGRPC(ir.OTLPCluster, 0),
				ServiceName: b.cfg.ServiceName,
			})},
		}}
	}
	return &listenerv3.Listener{
		Name:    l.Name,
		Address: socketAddress(l.Address, l.Port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       hcmName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.pack(h)},
			}},
		}},
	}
}

// accessLog sends every request's log entry to the ALS of this binary (contracts.md).
func (b *builder) accessLog() *accesslogv3.AccessLog {
	return &accesslogv3.AccessLog{
		Name: alsName,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: b.pack(&alsv3.HttpGrpcAccessLogConfig{
			CommonConfig: &alsv3.CommonGrpcAccessLogConfig{
				LogName:             ir.AccessLogName,
				GrpcService:         envoyGRPC(ir.ControlPlaneCluster, 0),
				TransportApiVersion: corev3.ApiVersion_V3,
			},
		})},
	}
}

// apiListener is what a proxyless gRPC client dialing xds:///host asks for: an HCM with RDS
// and the router filter only (grpc-go rejects filters it does not implement).
func (b *builder) apiListener(host string) *listenerv3.Listener {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: host,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: GRPCRouteConfigPrefix + host,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       routerFilter,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.pack(&routerv3.Router{})},
		}},
	}
	if hasFault(b.cfg) {
		// grpc-go (xds/internal/httpfilter/fault) and grpc-js (fault-injection-filter.js)
		// implement HTTPFault; empty here, the routes' typed_per_filter_config inject.
		h.HttpFilters = append([]*hcmv3.HttpFilter{{
			Name:       FaultFilter,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.pack(&faultv3.HTTPFault{})},
		}}, h.HttpFilters...)
	}
	// grpc-go does not implement these (it matches :path as the client sent it, and a gRPC
	// path is /package.Service/Method), but every HCM this gateway serves says the same.
	normalizePaths(h)
	return &listenerv3.Listener{
		Name:        host,
		ApiListener: &listenerv3.ApiListener{ApiListener: b.pack(h)},
	}
}

// normalizePaths turns on Envoy's path normalization, Envoy Gateway's defaults
// (internal/xds/translator/listener.go: normalize_path true, merge_slashes and
// UNESCAPE_AND_REDIRECT from its ClientTrafficPolicy path defaults). Without it the route
// match, the ext_authz context (route_id) and the policy the Check applies all follow the
// path as the client spelled it: /public/../admin matches the public prefix and reaches
// the upstream, which resolves the dots to /admin.
//
// Envoy applies them in the connection manager before the route is chosen and before any
// HTTP filter runs (ConnectionManagerUtility::maybeNormalizePath in
// source/common/http/conn_manager_utility.cc), so ext_authz sees the normalized :path:
//   - path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT: a path with %2F, %2f, %5C or
//     %5c is answered with a 307 to the unescaped path (PathUtil::unescapeSlashes), so
//     /app/..%2fadmin becomes a redirect to /app/../admin, which normalizes on the retry;
//   - normalize_path: PathUtil::canonicalPath (source/common/http/path_utility.cc) decodes
//     %XX of unreserved characters (%61 -> a, %2e -> .), turns backslashes into slashes and
//     removes dot segments per RFC 3986 5.2.4 (/a/./b -> /a/b, /a/x/../b -> /a/b, leading
//     /.. dropped); a path it cannot normalize is refused with 400;
//   - merge_slashes: PathUtil::mergeSlashes collapses //admin to /admin.
//
// The query is left alone by all three.
func normalizePaths(h *hcmv3.HttpConnectionManager) {
	h.NormalizePath = wrapperspb.Bool(true)
	h.MergeSlashes = true
	h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
}
